"""The naive ways the benchmarks compare against: the course's PNG pipeline and nn-layer ProtoNet
step, a params-dict second-order MAML with one backward, and `higher`'s MAML."""
import itertools
import os
import tempfile
import zipfile

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fewshot import networks
from tools.bench.common import timed
from tools.bench.ours import fixed_batches


class PngTaskDataset(torch.utils.data.Dataset):
    """The course's way: every task reads its PNG files again."""

    def __init__(self, folder, num_way, num_support, num_query):
        self.characters = sorted(os.path.join(folder, a, c) for a in os.listdir(folder)
                                 for c in os.listdir(os.path.join(folder, a)))
        self.num_way, self.num_support, self.num_query = num_way, num_support, num_query

    def __len__(self):
        return 10 ** 6

    def __getitem__(self, index):
        rng = np.random.default_rng(index)
        support, query = [], []
        for label, c in enumerate(rng.choice(len(self.characters), self.num_way, replace=False)):
            files = sorted(os.listdir(self.characters[c]))
            picked = rng.choice(files, self.num_support + self.num_query, replace=False)
            images = [1 - torch.tensor(np.asarray(Image.open(os.path.join(self.characters[c], f)).convert('L')),
                                       dtype=torch.float32).view(1, 28, 28) / 255 for f in picked]
            support += [(x, label) for x in images[:self.num_support]]
            query += [(x, label) for x in images[self.num_support:]]
        stack = lambda pairs: (torch.stack([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs]))
        return (*stack(support), *stack(query))


def naive_network():
    layers = []
    for i in range(4):
        layers += [torch.nn.Conv2d(1 if i == 0 else 64, 64, 3, padding=1), torch.nn.BatchNorm2d(64),
                   torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
    return torch.nn.Sequential(*layers, torch.nn.Flatten())


def child_protonet_naive(args, device):
    folder = tempfile.mkdtemp()
    with zipfile.ZipFile(os.path.join(args.data_dir, 'omniglot_resized.zip')) as archive:
        archive.extractall(folder)
    dataset = PngTaskDataset(os.path.join(folder, 'omniglot_resized'), 5, 5, 15)
    loader = iter(torch.utils.data.DataLoader(dataset, batch_size=16, num_workers=2, collate_fn=lambda b: b))
    step = naive_protonet_step(lambda: [[t.to(device) for t in task] for task in next(loader)], 5, device)
    return {'seconds': timed(step, args.repeats, device)}


def naive_protonet_step(next_tasks, num_way, device):
    """The course's ProtoNet step over next_tasks() -> [(xs, ys, xq, yq)]: nn layers, a per-task
    loop, support and query encoded separately, torch.cdist to the prototypes."""
    network = naive_network().to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)

    def step():
        losses = []
        for xs, ys, xq, yq in next_tasks():
            support, query = network(xs), network(xq)
            prototypes = torch.stack([support[ys == c].mean(0) for c in range(num_way)])
            losses.append(F.cross_entropy(-torch.cdist(query, prototypes) ** 2, yq))
        optimizer.zero_grad()
        torch.stack(losses).mean().backward()
        optimizer.step()
    return step


def naive_forward(params, x):
    """The course-style functional conv net: 4 x [conv, batch norm (batch statistics), ReLU, max-pool], linear."""
    for i in range(4):
        x = F.conv2d(x, params[f'conv{i}'], params[f'conv{i}_bias'], padding=1)
        x = F.batch_norm(x, None, None, params[f'bn{i}_weight'], params[f'bn{i}_bias'], training=True)
        x = F.max_pool2d(F.relu(x), 2)
    return F.linear(x.flatten(1), params['head'], params['head_bias'])


def child_maml_naive(args, device):
    """Naive second-order MAML: a params dict, a per-task Python loop, autograd.grad(create_graph=True),
    one backward of the mean outer loss (every task's graph held until then)."""
    torch.manual_seed(0)
    params = {k: v.to(device).requires_grad_() for k, v in
              networks.init_conv_params(4, 1, 64, num_outputs=5).items()}
    optimizer = torch.optim.Adam(params.values(), lr=1e-3)
    next_batch = itertools.cycle(fixed_batches(args, device)).__next__

    def step():
        outer = []
        for xs, ys, xq, yq in next_batch():
            phi = dict(params)
            for _ in range(args.inner_steps):
                grads = torch.autograd.grad(F.cross_entropy(naive_forward(phi, xs), ys), list(phi.values()),
                                            create_graph=True)
                phi = {k: v - args.inner_lr * g for (k, v), g in zip(phi.items(), grads)}
            outer.append(F.cross_entropy(naive_forward(phi, xq), yq))
        optimizer.zero_grad()
        torch.stack(outer).mean().backward()
        optimizer.step()
    return {'seconds': timed(step, args.repeats, device)}


def child_maml_higher(args, device):
    """Second-order MAML with `higher` (pip install -r requirements-bench.txt), task by task:
    each task's outer loss / B is back-propagated before the next task's inner loop."""
    import higher  # requirements-bench.txt
    torch.manual_seed(0)
    layers = []
    for i in range(4):
        layers += [torch.nn.Conv2d(1 if i == 0 else 64, 64, 3, padding=1),
                   torch.nn.BatchNorm2d(64, track_running_stats=False), torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
    network = torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(64, 5)).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    inner_optimizer = torch.optim.SGD(network.parameters(), lr=args.inner_lr)
    next_batch = itertools.cycle(fixed_batches(args, device)).__next__

    def step():
        optimizer.zero_grad()
        batch = next_batch()
        for xs, ys, xq, yq in batch:
            with higher.innerloop_ctx(network, inner_optimizer, copy_initial_weights=False) as (adapted, diffopt):
                for _ in range(args.inner_steps):
                    diffopt.step(F.cross_entropy(adapted(xs), ys))
                (F.cross_entropy(adapted(xq), yq) / len(batch)).backward()
        optimizer.step()
    return {'seconds': timed(step, args.repeats, device)}


def child_protonet_naive_fixed(args, device):
    """The course's ProtoNet step (naive_protonet_step) on the fixed batches."""
    torch.manual_seed(0)
    step = naive_protonet_step(itertools.cycle(fixed_batches(args, device)).__next__, args.way, device)
    return {'seconds': timed(step, args.repeats, device)}
