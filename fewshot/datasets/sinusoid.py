"""Sinusoid regression tasks (Finn et al., 2017): y = A sin(x - phase) with
A ~ U[0.1, 5.0], phase ~ U[0, pi], x ~ U[-5, 5]; K support and Q query points.

The network is Finn et al.'s MLP, 1 -> 40 -> 40 -> 1 with ReLU.
"""
import math
import os

import torch
import torch.nn.functional as F

from fewshot import contracts, networks, tasks

AMPLITUDE_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)
HIDDEN = 40
SPLIT_OFFSETS = {'train': 0, 'val': 1, 'test': 2}  # each split draws its own stream of tasks


def sine(x, amplitude, phase):
    """A sin(x - phase), broadcasting (B, 1, 1) parameters over (B, M, 1) inputs."""
    return amplitude * torch.sin(x - phase)


class SinusoidSampler(contracts.Sampler):
    """Batches of sinusoid tasks as TaskBatch: images_* are x (B, M, 1), labels_* are y (B, M, 1)."""
    description = 'random sinusoids'

    def __init__(self, num_support, num_query, seed=0, device='cpu'):
        self.num_support, self.num_query = num_support, num_query
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)

    def _uniform(self, shape, bounds):
        low, high = bounds
        return low + (high - low) * torch.rand(shape, generator=self.generator, dtype=torch.float32)

    def sample_with_parameters(self, batch_size):
        """(TaskBatch, amplitude (B,), phase (B,))."""
        amplitude = self._uniform((batch_size, 1, 1), AMPLITUDE_RANGE)
        phase = self._uniform((batch_size, 1, 1), PHASE_RANGE)
        x = self._uniform((batch_size, self.num_support + self.num_query, 1), X_RANGE)
        y = sine(x, amplitude, phase)
        k = self.num_support
        batch = tasks.TaskBatch(x[:, :k], y[:, :k], x[:, k:], y[:, k:]).to(self.device)
        return batch, amplitude.flatten(), phase.flatten()

    def sample(self, batch_size):
        return self.sample_with_parameters(batch_size)[0]


def init_params():
    """fc0 (40, 1), fc1 (40, 40), head (1, 40) with biases; PyTorch's default init."""
    params = {}
    for name, fan_in, fan_out in (('fc0', 1, HIDDEN), ('fc1', HIDDEN, HIDDEN), ('head', HIDDEN, 1)):
        params.update(networks.init_linear_params(name, fan_in, fan_out))
    return params


def forward(params, x, num_tasks=1, fused_bn=True):
    """(M, 1) inputs -> (M, 1) predictions (no batch norm: num_tasks, fused_bn unused)."""
    x = F.relu(F.linear(x, params['fc0'], params['fc0_bias']))
    x = F.relu(F.linear(x, params['fc1'], params['fc1_bias']))
    return F.linear(x, params['head'], params['head_bias'])


def plot_task(learner, path, num_support, seed=0):
    """Draw one test task: the true curve, the K support points, and the
    prediction before and after adaptation. Returns the task's (amplitude, phase)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    sampler = SinusoidSampler(num_support, 1, seed=3 * seed + SPLIT_OFFSETS['test'], device=learner.device)
    batch, amplitude, phase = sampler.sample_with_parameters(1)
    grid = torch.linspace(*X_RANGE, 200, device=learner.device).unsqueeze(-1)  # (200, 1)
    x, y = batch.images_support[0], batch.labels_support[0]
    history, _, _ = learner.inner.adapt(x, y, create_graph=False, train=False)
    with torch.no_grad():
        before, after = (learner.inner.forward(grid, history[i]).cpu() for i in (0, -1))
    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    axes.plot(grid.cpu(), sine(grid.cpu(), amplitude, phase), 'k-', label='true function')
    axes.plot(x.cpu(), y.cpu(), 'o', color='tab:red', label=f'{num_support} support points')
    axes.plot(grid.cpu(), before, '--', color='tab:gray', label='before adaptation')
    axes.plot(grid.cpu(), after, '-', color='tab:blue', label=f'after {learner.inner.num_inner_steps} inner step(s)')
    axes.set_xlabel('x')
    axes.set_ylabel('y')
    axes.set_title(f'Sinusoid test task: A = {amplitude.item():.2f}, phase = {phase.item():.2f}', fontsize=10)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return amplitude.item(), phase.item()


class Sinusoid(contracts.Dataset):
    """Finn et al.'s sinusoid regression, with their settings as defaults."""
    name = 'sinusoid'
    task = tasks.REGRESSION
    defaults = dict(num_way=1, num_support=[10], num_query=10, batch_size=25)

    def build_sampler(self, split, args, seed, device):
        return SinusoidSampler(args.num_support, args.num_query, 3 * seed + SPLIT_OFFSETS[split], device)

    def network(self, args, num_outputs=1):
        """(params, forward) of the MLP 1 -> 40 -> 40 -> 1 (one output whatever num_outputs)."""
        return init_params(), forward

    def after_test(self, learner, args, log_dir):
        """Draw one test task into log_dir/sinusoid_task.png."""
        path = os.path.join(log_dir, 'sinusoid_task.png')
        plot_task(learner, path, args.num_support, args.seed)
        print(f'one test task drawn in {path}')
