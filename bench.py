"""Speed and memory of the training steps, against the naive way, in one run.

    python bench.py --data_dir ./data            # everything, prints markdown tables
    python bench.py --data_dir ./data --only protonet
    python bench.py --data_dir ./data --device gpu --repeats 30   # the same on a GPU
    python bench.py --data_dir ./data --only processes            # 1 process x 2 threads vs 2 x 1 (CPU)
    python bench.py --data_dir ./data --only growth --plot docs/benchmark_growth.png   # cost vs N, K, steps, tasks
    python bench.py --data_dir ./data --only layout               # NCHW vs channels-last, op by op

Each configuration runs in its own process (the allocator setting is
process-wide, and peak memory is read per process). Timings are medians.
"""
import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

import torch
import torch.nn.functional as F

import util

PROTONET_GFLOP = 94.0  # one 16-task 5w5s (Q=15) step: forward + backward of the conv encoder


def synchronize(device):
    """Wait for queued device work, so that host clocks time it."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    elif device.type == 'mps':
        torch.mps.synchronize()


def matmul_gflops(device, size):
    """The device's fp32 matmul rate (TF32 off, as torch's default for matmul)."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    synchronize(device)
    return 2 * size ** 3 * 10 / (time.perf_counter() - start) / 1e9


def timed(step, repeats, device):
    """Median seconds of step() after two warm-up calls, device work included."""
    step()
    step()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory_mb(device):
    """Peak device memory allocated by torch on a GPU, the process's peak RSS on a CPU."""
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------ naive course pipeline

class PngTaskDataset(torch.utils.data.Dataset):
    """The course's way: every task reads its PNG files again."""

    def __init__(self, folder, num_way, num_support, num_query):
        self.characters = sorted(os.path.join(folder, a, c) for a in os.listdir(folder)
                                 for c in os.listdir(os.path.join(folder, a)))
        self.num_way, self.num_support, self.num_query = num_way, num_support, num_query

    def __len__(self):
        return 10 ** 6

    def __getitem__(self, index):
        import numpy as np
        from PIL import Image
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


def timed_training_step(learner, sampler, args, device):
    """Median seconds of one meta-update of 16 tasks by the training loop, sampling included
    (under torchrun: each process's share, gradients summed across the processes)."""
    import distributed
    import training
    processes = distributed.start(device)
    optimizer = training.build_optimizer(learner, 1e-3)
    step = lambda: training.train_step(learner, optimizer, sampler.sample(16), 0, 1e-3, 1, processes)  # noqa: E731
    return {'seconds': timed(step, args.repeats, device), 'main': processes.is_main}


def child_protonet(args, device):
    import cli
    import networks
    import omniglot
    import protonet
    if args.allocator == 'tuned' and device.type == 'cpu':
        util.tune_cpu_allocator()
    sampler = omniglot.omniglot_sampler('train', 5, 5, 15, args.data_dir, seed=0, device=device)
    encoder = networks.FunctionalNet(networks.conv_features, networks.init_conv_params(4, 1, 64))
    learner = protonet.ProtoNet(encoder, device, tasks_per_call=args.tasks_per_call,
                                channels_last=cli.channels_last(args, omniglot))
    return timed_training_step(learner, sampler, args, device)


def child_maml(args, device):
    import cli
    import maml
    import networks
    import omniglot
    if device.type == 'cpu':
        util.tune_cpu_allocator()
    sampler = omniglot.omniglot_sampler('train', 5, 1, 15, args.data_dir, seed=0, device=device)
    learner = maml.MAML(networks.init_conv_params(4, 1, 64, num_outputs=5), networks.conv_net,
                        num_inner_steps=args.inner_steps, inner_lr=args.inner_lr, learn_inner_lrs=bool(args.learn_inner_lrs),
                        first_order=bool(args.first_order), device=device, vmap_tasks=args.vmap == 'yes',
                        channels_last=cli.channels_last(args, omniglot))
    return timed_training_step(learner, sampler, args, device)


# ------------------------------------------------------------ MAML compute: ours, naive, higher

def fixed_batches(args, device):
    """Three seeded args.way-way args.shot-shot batches of args.tasks tasks (15 queries per
    class), the same in every process."""
    import omniglot
    sampler = omniglot.omniglot_sampler('train', args.way, args.shot, 15, args.data_dir, seed=0, device=device)
    return [sampler.sample(args.tasks) for _ in range(3)]


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
    import networks
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
    import higher
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


def child_maml_fixed(args, device):
    """Our second-order MAML through the training loop on the fixed batches (no sampling)."""
    import cli
    import maml
    import networks
    import omniglot
    if device.type == 'cpu':
        util.tune_cpu_allocator()
    torch.manual_seed(0)
    learner = maml.MAML(networks.init_conv_params(4, 1, 64, num_outputs=args.way), networks.conv_net,
                        num_inner_steps=args.inner_steps, inner_lr=args.inner_lr, device=device,
                        vmap_tasks=args.vmap == 'yes', channels_last=cli.channels_last(args, omniglot))
    return fixed_batch_steps(learner, args, device)


def child_protonet_fixed(args, device):
    """Our ProtoNet through the training loop on the fixed batches (no sampling), per-task encoder calls."""
    import cli
    import networks
    import omniglot
    import protonet
    if device.type == 'cpu':
        util.tune_cpu_allocator()
    torch.manual_seed(0)
    encoder = networks.FunctionalNet(networks.conv_features, networks.init_conv_params(4, 1, 64))
    learner = protonet.ProtoNet(encoder, device, tasks_per_call=args.tasks_per_call,
                                channels_last=cli.channels_last(args, omniglot))
    return fixed_batch_steps(learner, args, device)


def fixed_batch_steps(learner, args, device):
    """Median seconds of the training loop's meta-update on the fixed batches, cycled, in
    args.precision (bf16: autocast)."""
    import training
    optimizer = training.build_optimizer(learner, 1e-3)
    next_batch = itertools.cycle(fixed_batches(args, device)).__next__
    per_backward = learner.tasks_per_backward if args.tasks_per_backward < 0 else args.tasks_per_backward

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == 'bf16'):
            training.train_step(learner, optimizer, next_batch(), 0, 1e-3, 1, tasks_per_backward=per_backward)
    return {'seconds': timed(step, args.repeats, device)}


def child_protonet_naive_fixed(args, device):
    """The course's ProtoNet step (naive_protonet_step) on the fixed batches."""
    torch.manual_seed(0)
    step = naive_protonet_step(itertools.cycle(fixed_batches(args, device)).__next__, args.way, device)
    return {'seconds': timed(step, args.repeats, device)}


CHILDREN = {'protonet_naive': child_protonet_naive, 'protonet': child_protonet, 'maml': child_maml,
            'maml_naive': child_maml_naive, 'maml_higher': child_maml_higher, 'maml_fixed': child_maml_fixed,
            'protonet_fixed': child_protonet_fixed, 'protonet_naive_fixed': child_protonet_naive_fixed}


def run_child(kind, data_dir, repeats, device, processes=1, **options):
    """Run one configuration in a fresh process (or under torchrun in several); its result dict."""
    launcher = [sys.executable] if processes == 1 else \
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(processes)]
    command = [*launcher, __file__, '--child', kind, '--data_dir', data_dir, '--repeats', str(repeats),
               '--device', device]
    for key, value in options.items():
        command += [f'--{key}', str(value)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return next(r for r in map(json.loads, output.strip().splitlines()[::-1]) if r.get('main', True))


def bench_processes(data_dir, repeats):
    """1 process x 2 threads against 2 processes x 1 thread (torchrun, gloo) on this CPU."""
    print('\n## Several CPU processes: 16 tasks per step split over the processes (train step incl. sampling)\n')
    print('| configuration | 1 process x 2 threads: ms / step | 2 processes x 1 thread: ms / step | tasks / s, 1 x 2 '
          '| tasks / s, 2 x 1 | 2 x 1 vs 1 x 2 |')
    print('|---|---|---|---|---|---|')
    configs = [('ProtoNet 5w5s', 'protonet', dict(tasks_per_call=1)),
               ('MAML 5w1s, second-order, 1 step', 'maml', dict(inner_steps=1))]
    for name, kind, options in configs:
        one = run_child(kind, data_dir, repeats, 'cpu', **options)['seconds']
        two = run_child(kind, data_dir, repeats, 'cpu', processes=2, **options)['seconds']
        print(f'| {name} | {1000 * one:.1f} | {1000 * two:.1f} | {16 / one:.1f} | {16 / two:.1f} | {one / two:.2f}x |')


def bench_protonet(data_dir, repeats, device, peak):
    print('\n## ProtoNet, 5-way 5-shot, 15 queries, 16 tasks per step (train step incl. sampling)\n')
    print('| pipeline | ms / step | tasks / s | fraction of fp32 matmul rate | vs naive |')
    print('|---|---|---|---|---|')
    run = lambda kind, **options: run_child(kind, data_dir, repeats, device, **options)
    rows = [('naive: PNG DataLoader (2 workers) + per-task loop', run('protonet_naive'))]
    if device == 'cpu':
        rows += [('ours: per-task encoder calls, default allocator',
                  run('protonet', allocator='default', tasks_per_call=1)),
                 ('ours: per-task encoder calls, tuned allocator (default on CPU)', run('protonet', tasks_per_call=1)),
                 ('ours: one batched call of 16 tasks, tuned allocator', run('protonet', tasks_per_call=16))]
    else:
        rows += [('ours: per-task encoder calls', run('protonet', tasks_per_call=1)),
                 ('ours: one batched call of 16 tasks (default on a GPU)', run('protonet', tasks_per_call=16))]
    naive = rows[0][1]['seconds']
    for name, result in rows:
        s = result['seconds']
        print(f'| {name} | {1000 * s:.1f} | {16 / s:.1f} | {PROTONET_GFLOP / s / peak:.2f} | {naive / s:.2f}x |')


def bench_maml(data_dir, repeats, device):
    print('\n## MAML, 5-way 1-shot, 15 queries, 16 tasks per step (train step incl. sampling)\n')
    memory = 'peak GPU MB' if device == 'cuda' else 'peak RSS MB'  # as peak_memory_mb reads it
    print(f'| configuration | loop: ms / step | vmap: ms / step | vmap speed-up | loop: {memory} | vmap: {memory} |')
    print('|---|---|---|---|---|---|')
    configs = [('second-order, 1 step', dict(inner_steps=1)),
               ('second-order, 5 steps', dict(inner_steps=5)),
               ('first-order, 1 step', dict(inner_steps=1, first_order=1)),
               ('second-order, 1 step, learned inner LRs', dict(inner_steps=1, learn_inner_lrs=1))]
    for name, options in configs:
        loop = run_child('maml', data_dir, repeats, device, vmap='no', **options)
        vmap = run_child('maml', data_dir, repeats, device, vmap='yes', **options)
        print(f'| {name} | {1000 * loop["seconds"]:.1f} | {1000 * vmap["seconds"]:.1f} '
              f'| {loop["seconds"] / vmap["seconds"]:.2f}x | {loop["peak_mb"]:.0f} | {vmap["peak_mb"]:.0f} |')


def higher_installed():
    import importlib.util
    return importlib.util.find_spec('higher') is not None


def bench_maml_compute(data_dir, repeats, device, rounds):
    """Second-order MAML 5w1s on the same fixed tasks: ours, naive and `higher`; interleaved rounds."""
    variants = [('naive: params dict, per-task loop, one backward', 'maml_naive', {}),
                ('ours: one backward per meta-batch (`--tasks_per_backward 0`)', 'maml_fixed', {}),
                ('ours: a backward per task (default of the per-task loop)', 'maml_fixed',
                 dict(tasks_per_backward=1))]
    if higher_installed():
        variants.append(('`higher`, task by task', 'maml_higher', {}))
    for inner_steps, inner_lr in ((1, 0.4), (5, 0.04)):
        print(f'\n## MAML 5w1s, second-order, {inner_steps} inner step(s) at {inner_lr}, 15 queries, 16 tasks per '
              f'step: compute only, the same tasks for every variant ({rounds} interleaved rounds)\n')
        results = {name: [] for name, _, _ in variants}
        for _ in range(rounds):
            for name, kind, options in variants:
                results[name].append(run_child(kind, data_dir, repeats, device, tasks=16, inner_steps=inner_steps,
                                               inner_lr=inner_lr, **options))
        seconds = {name: statistics.median(r['seconds'] for r in rs) for name, rs in results.items()}
        naive = seconds[variants[0][0]]
        reference = seconds.get(variants[-1][0]) if higher_installed() else None
        print('| variant | ms / step (median of rounds) | peak RSS MB | vs naive | vs `higher` |')
        print('|---|---|---|---|---|')
        for name, rs in results.items():
            versus = f'{reference / seconds[name]:.2f}x' if reference else 'not installed'
            print(f'| {name} | {1000 * seconds[name]:.1f} | {max(r["peak_mb"] for r in rs):.0f} | '
                  f'{naive / seconds[name]:.2f}x | {versus} |')


def bench_maml_memory(data_dir, repeats, device):
    """Peak memory of second-order MAML with 5 inner steps as the tasks per step grow."""
    sizes = (1, 4, 16)
    variants = [('naive, one backward', 'maml_naive', {}), ('ours, one backward', 'maml_fixed', {}),
                ('ours, a backward per task (default)', 'maml_fixed', dict(tasks_per_backward=1))]
    if higher_installed():
        variants.append(('`higher`, task by task', 'maml_higher', {}))
    memory = 'peak GPU MB' if device == 'cuda' else 'peak RSS MB'
    print(f'\n## MAML 5w1s, second-order, 5 inner steps at 0.04: {memory} (ms / step) by tasks per step\n')
    print('| variant | ' + ' | '.join(f'{b} tasks' for b in sizes) + f' | growth 1 -> {sizes[-1]} tasks, MB |')
    print('|---|' + '---|' * (len(sizes) + 1))
    for name, kind, options in variants:
        rs = [run_child(kind, data_dir, repeats, device, tasks=b, inner_steps=5, inner_lr=0.04, **options)
              for b in sizes]
        cells = ' | '.join(f'{r["peak_mb"]:.0f} ({1000 * r["seconds"]:.0f} ms)' for r in rs)
        print(f'| {name} | {cells} | {rs[-1]["peak_mb"] - rs[0]["peak_mb"]:.0f} |')


def bench_levers(data_dir, repeats, device, rounds, peak):
    """Compute-only steps on fixed tasks against naive code: ProtoNet 5w5s and second-order MAML 5w1s,
    fp32 and bf16 (autocast), contiguous and channels_last inputs; interleaved rounds."""
    setups = [('ProtoNet 5w5s', dict(way=5, shot=5, tasks=16), 'protonet_naive_fixed', 'protonet_fixed'),
              ('MAML 5w1s, second-order, 1 step at 0.4', dict(way=5, shot=1, tasks=16, inner_steps=1, inner_lr=0.4),
               'maml_naive', 'maml_fixed'),
              ('MAML 5w1s, second-order, 5 steps at 0.04', dict(way=5, shot=1, tasks=16, inner_steps=5,
                                                                inner_lr=0.04), 'maml_naive', 'maml_fixed')]
    levers = [('fp32, contiguous', dict(channels_last='no')), ('fp32, channels_last', dict(channels_last='yes')),
              ('bf16, contiguous', dict(precision='bf16', channels_last='no')),
              ('bf16, channels_last', dict(precision='bf16', channels_last='yes'))]
    for title, shape, naive_kind, ours_kind in setups:
        print(f'\n## {title}, 15 queries per class, 16 tasks: compute only, the same tasks for every variant '
              f'({rounds} interleaved rounds)\n')
        variants = [('naive (course-style), fp32', naive_kind, {})] + \
            [(f'ours, {name}', ours_kind, dict(options, tasks_per_backward=-1)) for name, options in levers]
        results = {name: [] for name, _, _ in variants}
        for _ in range(rounds):
            for name, kind, options in variants:
                results[name].append(run_child(kind, data_dir, repeats, device, **shape, **options))
        seconds = {name: statistics.median(r['seconds'] for r in rs) for name, rs in results.items()}
        naive = seconds[variants[0][0]]
        rate = ' | fraction of fp32 matmul rate' if title.startswith('ProtoNet') else ''
        print(f'| variant | ms / step | peak RSS MB | vs naive{rate} |')
        print('|---|---|---|---|' + ('---|' if rate else ''))
        for name, rs in results.items():
            fraction = f' | {PROTONET_GFLOP / seconds[name] / peak:.2f}' if rate else ''
            print(f'| {name} | {1000 * seconds[name]:.1f} | {max(r["peak_mb"] for r in rs):.0f} | '
                  f'{naive / seconds[name]:.2f}x{fraction} |')


def bench_layout(repeats, device):
    """The first block's operations on one per-task call's activations (100 images, 64 channels,
    28 x 28), NCHW against channels-last, forward and backward; and the layout the first
    convolution writes for each way of laying out its one-channel input."""
    import networks
    torch.manual_seed(0)
    images = torch.rand(100, 1, 28, 28, device=device)
    conv0 = torch.rand(64, 1, 3, 3, device=device, requires_grad=True)
    conv1 = torch.rand(64, 64, 3, 3, device=device, requires_grad=True)
    weight, bias = torch.ones(64, device=device, requires_grad=True), torch.zeros(64, device=device, requires_grad=True)

    def forward_backward(op, x):
        """op's forward and backward, with an output gradient in the output's layout (as in training)."""
        x = x.detach().requires_grad_()
        grad = torch.randn_like(op(x))
        return lambda: torch.autograd.grad(op(x), x, grad)
    ops = [('max_pool2d (2 x 2)', lambda x: F.max_pool2d(x, 2)),
           ('batch_norm (batch statistics)', lambda x: F.batch_norm(x, None, None, weight, bias, training=True)),
           ('conv2d 64 -> 64 channels, 3 x 3', lambda x: F.conv2d(x, conv1, padding=1))]
    activations = torch.rand(100, 64, 28, 28, device=device)
    print('\n## Image layout: one per-task call\'s first block (100 images, 64 channels, 28 x 28), '
          'forward and backward, ms\n')
    print('| operation | NCHW | channels-last | NCHW / channels-last |')
    print('|---|---|---|---|')
    for name, op in ops:
        nchw = timed(forward_backward(op, activations), repeats, torch.device(device))
        last = timed(forward_backward(op, networks.channels_last(activations)), repeats, torch.device(device))
        print(f'| {name} | {1000 * nchw:.2f} | {1000 * last:.2f} | {nchw / last:.1f}x |')
    print('\n| the network (4 blocks, 5-way head), per-task pass | NCHW ms | channels-last ms | NCHW / channels-last |')
    print('|---|---|---|---|')
    params = {k: v.to(device).requires_grad_() for k, v in networks.init_conv_params(4, 1, 64, num_outputs=5).items()}
    for size in (5, 75):
        labels = torch.arange(size, device=device) % 5
        for name, twice in (('loss and gradient', False), ('gradient, then the gradient of its norm '
                                                            '(second order)', True)):
            def step(x, twice=twice):
                grads = torch.autograd.grad(F.cross_entropy(networks.conv_net(params, x), labels),
                                            list(params.values()), create_graph=twice)
                if twice:
                    torch.autograd.grad(sum(g.square().sum() for g in grads), list(params.values()))
            nchw = timed(lambda: step(images[:size]), repeats, torch.device(device))
            last = timed(lambda: step(networks.channels_last(images[:size])), repeats, torch.device(device))
            print(f'| {size} images: {name} | {1000 * nchw:.1f} | {1000 * last:.1f} | {nchw / last:.2f}x |')
    print('\n| first convolution\'s one-channel input | its output is channels-last | ms (forward, weight backward) |')
    print('|---|---|---|')
    inputs = [('contiguous', images), ('.contiguous(memory_format=torch.channels_last)',
                                        images.contiguous(memory_format=torch.channels_last)),
              ('networks.channels_last (strides set)', networks.channels_last(images))]
    for name, x in inputs:
        output = F.conv2d(x, conv0, padding=1)
        grad = torch.randn_like(output)
        seconds = timed(lambda: torch.autograd.grad(F.conv2d(x, conv0, padding=1), conv0, grad), repeats,
                        torch.device(device))
        print(f'| {name} | {output.is_contiguous(memory_format=torch.channels_last) and not output.is_contiguous()} '
              f'| {1000 * seconds:.2f} |')


def bench_bf16_gradients(data_dir, device):
    """How close bf16 autocast's gradients come to fp32's: ProtoNet 5w5s and second-order MAML
    5w1s at initialisation, on the same 16 fixed tasks (in this process)."""
    import maml
    import networks
    import protonet
    import training
    print('\n## bf16 (autocast) against fp32 gradients, the same 16 tasks, at initialisation\n')
    print('| step | loss fp32 | loss bf16 | cosine(grad bf16, grad fp32) | |grad bf16 - grad fp32| / |grad fp32| |')
    print('|---|---|---|---|---|')
    def maml_learner(steps, inner_lr):
        return maml.MAML(networks.init_conv_params(4, 1, 64, num_outputs=5), networks.conv_net,
                         num_inner_steps=steps, inner_lr=inner_lr, device=device, vmap_tasks=False)
    setups = [('ProtoNet 5w5s', 5, lambda: protonet.ProtoNet(networks.FunctionalNet(
                   networks.conv_features, networks.init_conv_params(4, 1, 64)), device, tasks_per_call=1)),
              ('MAML 5w1s, 1 step at 0.4', 1, lambda: maml_learner(1, 0.4)),
              ('MAML 5w1s, 5 steps at 0.04', 1, lambda: maml_learner(5, 0.04))]
    for name, shot, build in setups:
        torch.manual_seed(0)
        learner = build()
        batch = fixed_batches(argparse.Namespace(way=5, shot=shot, tasks=16, data_dir=data_dir), device)[0]
        results = []
        for precision in ('fp32', 'bf16'):
            for p in learner.parameters():
                p.grad = None
            with util.autocast(device, precision):
                loss, _ = training.backward_in_groups(learner, batch, 0, learner.tasks_per_backward, len(batch))
            results.append((loss, torch.cat([p.grad.flatten() for p in learner.parameters()])))
        (loss32, grad32), (loss16, grad16) = results
        cosine = F.cosine_similarity(grad32, grad16, 0).item()
        error = ((grad16 - grad32).norm() / grad32.norm()).item()
        print(f'| {name} | {loss32:.4f} | {loss16:.4f} | {cosine:.4f} | {error:.3f} |')


GROWTH_BASE = dict(way=5, shot=1, inner_steps=1, tasks=16)  # one factor at a time moves from here
GROWTH_FACTORS = [('way', 'N-way', (5, 20)), ('shot', 'K-shot', (1, 5)), ('inner_steps', 'inner steps', (1, 2, 3, 5)),
                  ('tasks', 'tasks per step', (4, 8, 16, 32))]


def bench_growth(data_dir, repeats, device, plot_path):
    """Time and peak memory per training step (compute only, the project's defaults) of ProtoNet
    and second-order MAML as N, K, inner steps and tasks per step grow, one at a time."""
    memory = 'peak GPU MB' if device == 'cuda' else 'peak RSS MB'
    print(f'\n## How cost grows: ms / step and {memory}, one factor at a time from 5-way 1-shot, 15 queries per '
          'class, 1 inner step at 0.4, 16 tasks (compute only; the defaults: ProtoNet per-task encoder calls, '
          'MAML a per-task loop with a backward per task)\n')
    print(f'| factor | value | ProtoNet ms | ProtoNet {memory} | MAML ms | MAML {memory} |')
    print('|---|---|---|---|---|---|')
    rows = []
    for key, label, values in GROWTH_FACTORS:
        if key == 'inner_steps':
            results = [(None, run_child('maml_fixed', data_dir, repeats, device, tasks_per_backward=-1,
                                        **{**GROWTH_BASE, key: v})) for v in values]
        else:
            results = [tuple(run_child(kind, data_dir, repeats, device, tasks_per_backward=-1,
                                       **{**GROWTH_BASE, key: v}) for kind in ('protonet_fixed', 'maml_fixed'))
                       for v in values]
        for value, (proto, meta) in zip(values, results):
            cells = ['-', '-'] if proto is None else [f'{1000 * proto["seconds"]:.0f}', f'{proto["peak_mb"]:.0f}']
            print(f'| {label} | {value} | {cells[0]} | {cells[1]} | {1000 * meta["seconds"]:.0f} | '
                  f'{meta["peak_mb"]:.0f} |')
        rows.append((label, values, results))
    if plot_path:
        plot_growth(rows, memory, plot_path)


def plot_growth(rows, memory, path):
    """Two rows of panels (ms / step, peak memory), one column per factor."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(2, len(rows), figsize=(3.2 * len(rows), 5.5))
    for column, (label, values, results) in enumerate(rows):
        for index, name in enumerate(('ProtoNet', 'MAML')):
            points = [(v, r[index]) for v, r in zip(values, results) if r[index] is not None]
            if points:
                style = dict(marker='o', color=f'C{index}', label=name)
                axes[0, column].plot([v for v, _ in points], [1000 * r['seconds'] for _, r in points], **style)
                axes[1, column].plot([v for v, _ in points], [r['peak_mb'] for _, r in points], **style)
        axes[1, column].set_xlabel(label)
        axes[0, column].set_xticks(values)
        axes[1, column].set_xticks(values)
    axes[0, 0].set_ylabel('ms / step')
    axes[1, 0].set_ylabel(memory)
    axes[0, 0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f'\n![how cost grows]({path})')


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data_dir', default='./data', help='holds omniglot_resized.zip (the naive pipeline reads it)')
    parser.add_argument('--repeats', type=util.positive_int, default=5)
    parser.add_argument('--only', choices=['protonet', 'maml', 'processes', 'maml_compute', 'maml_memory', 'levers',
                                           'bf16_gradients', 'growth', 'layout'])
    parser.add_argument('--plot', default=None, help='with growth: write its figure to this PNG file')
    parser.add_argument('--rounds', type=util.positive_int, default=3, help='interleaved rounds (maml_compute)')
    parser.add_argument('--device', default='cpu', help='cpu, gpu, cuda, mps or auto, as in training')
    parser.add_argument('--child', choices=list(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument('--allocator', default='tuned', help=argparse.SUPPRESS)
    parser.add_argument('--tasks_per_call', type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument('--inner_steps', type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument('--first_order', type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument('--learn_inner_lrs', type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument('--vmap', default='no', help=argparse.SUPPRESS)
    parser.add_argument('--tasks', type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument('--way', type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument('--precision', default='fp32', help=argparse.SUPPRESS)
    parser.add_argument('--channels_last', choices=['auto', 'yes', 'no'], default='auto',
                        help=argparse.SUPPRESS)  # as in training; auto: the device's default (no timing here)
    parser.add_argument('--shot', type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument('--inner_lr', type=float, default=0.4, help=argparse.SUPPRESS)
    parser.add_argument('--tasks_per_backward', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = util.resolve_device(args.device)
    if args.child:
        result = CHILDREN[args.child](args, device)
        result['peak_mb'] = peak_memory_mb(device)
        print(json.dumps(result))
        return
    if device.type == 'cpu':
        peak = matmul_gflops(device, 2048)
        where = f'{os.cpu_count()} CPU cores, {torch.get_num_threads()} threads'
    else:
        peak = matmul_gflops(device, 8192)
        where = f'{torch.cuda.get_device_name(device)}'
    print(f'# bench.py on {where}, torch {torch.__version__}; fp32 matmul: {peak:.0f} GFLOP/s')
    if args.only in (None, 'protonet'):
        bench_protonet(args.data_dir, args.repeats, device.type, peak)
    if args.only in (None, 'maml'):
        bench_maml(args.data_dir, args.repeats, device.type)
    if args.only in (None, 'processes') and device.type == 'cpu':
        bench_processes(args.data_dir, args.repeats)
    if args.only in (None, 'maml_compute'):
        bench_maml_compute(args.data_dir, args.repeats, device.type, args.rounds)
    if args.only in (None, 'maml_memory'):
        bench_maml_memory(args.data_dir, args.repeats, device.type)
    if args.only in (None, 'levers'):
        bench_levers(args.data_dir, args.repeats, device.type, args.rounds, peak)
    if args.only in (None, 'bf16_gradients'):
        bench_bf16_gradients(args.data_dir, device)
    if args.only in (None, 'layout'):
        bench_layout(max(args.repeats, 10), device.type)
    if args.only in (None, 'growth'):
        bench_growth(args.data_dir, args.repeats, device.type, args.plot)


if __name__ == '__main__':
    main()
