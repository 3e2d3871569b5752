"""Functional networks shared by the algorithms: parameters are a dict of
tensors, the forward pass a plain function of (params, inputs).

Batch norm uses the statistics of the current batch (the course's
transductive setting, no running statistics), but in RunningStatisticsNet. With `num_tasks = B`, the
leading dimension holds B tasks of equal size and every task is normalised
with its own statistics, exactly as if each task went through alone.
"""
import contextlib
import math
import threading

import torch
import torch.nn.functional as F

BN_EPS = 1e-5


class FunctionalNet(torch.nn.Module):
    """A functional network fn(params, x, num_tasks) holding its params as an nn.Module."""

    def __init__(self, function, params):
        super().__init__()
        self.function = function
        self.params = torch.nn.ParameterDict({k: torch.nn.Parameter(v) for k, v in params.items()})

    def forward(self, x, num_tasks=1):
        return self.function(dict(self.params), x, num_tasks)


class RunningStatisticsNet(FunctionalNet):
    """A FunctionalNet whose batch norms keep running statistics (buffers running_mean{i},
    running_var{i}; PyTorch's BatchNorm update: momentum 0.1, unbiased variance): inside
    `training()` each block normalises with its batch statistics (each task's own, as
    task_batch_norm) and updates the running ones with their mean over the tasks;
    elsewhere it normalises with the running ones (eval mode, as Snell et al.'s code
    evaluates). function must take norm=(x, i) -> x (conv_net, mlp_net)."""

    MOMENTUM = 0.1

    def __init__(self, function, params):
        super().__init__(function, params)
        self.blocks = sum(1 for k in params if k.startswith('bn') and k.endswith('_weight'))
        for i in range(self.blocks):
            channels = params[f'bn{i}_weight'].shape[0]
            self.register_buffer(f'running_mean{i}', torch.zeros(channels, dtype=params[f'bn{i}_weight'].dtype))
            self.register_buffer(f'running_var{i}', torch.ones(channels, dtype=params[f'bn{i}_weight'].dtype))

    def forward(self, x, num_tasks=1):
        params = dict(self.params)
        return self.function(params, x, num_tasks, norm=lambda x, i: self.norm(params, x, i, num_tasks))

    def norm(self, params, x, i, num_tasks):
        """Block i's batch norm of (T*M, C, ...) activations of num_tasks tasks."""
        weight, bias = params[f'bn{i}_weight'], params[f'bn{i}_bias']
        mean, var = getattr(self, f'running_mean{i}'), getattr(self, f'running_var{i}')
        if not is_training():
            return F.batch_norm(x, mean, var, weight, bias, training=False, eps=BN_EPS)
        with torch.no_grad():
            grouped = x.detach().unflatten(0, (num_tasks, -1)).to(mean.dtype)  # (T, M, C, ...)
            dims = [1] + list(range(3, grouped.dim()))
            task_var, task_mean = torch.var_mean(grouped, dim=dims, correction=1)  # (T, C)
            mean.lerp_(task_mean.mean(0), self.MOMENTUM)
            var.lerp_(task_var.mean(0), self.MOMENTUM)
        return task_batch_norm(x, weight, bias, num_tasks)


def init_conv_params(num_blocks=4, in_channels=1, hidden_channels=64, num_outputs=None, dtype=torch.float32,
                     positions=1, batch_norm_init='ones'):
    """Parameters of [conv3x3 -> BN -> ReLU -> maxpool2] x num_blocks (+ linear head on the
    hidden_channels * positions flattened features: positions = H * W left after the pools).

    Conv and linear weights use PyTorch's default (Kaiming-uniform) init,
    biases 0; BN bias 0 and BN weight 1, or with batch_norm_init='uniform' drawn from U(0, 1)
    (PyTorch's default before version 1.0). Keys: conv{i}, conv{i}_bias, bn{i}_weight,
    bn{i}_bias, and head, head_bias when num_outputs is given.
    """
    params = {}
    channels = in_channels
    for i in range(num_blocks):
        weight = torch.empty(hidden_channels, channels, 3, 3, dtype=dtype)
        torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        params[f'conv{i}'] = weight
        params[f'conv{i}_bias'] = torch.zeros(hidden_channels, dtype=dtype)
        params[f'bn{i}_weight'] = (torch.rand if batch_norm_init == 'uniform' else torch.ones)(hidden_channels,
                                                                                               dtype=dtype)
        params[f'bn{i}_bias'] = torch.zeros(hidden_channels, dtype=dtype)
        channels = hidden_channels
    if num_outputs is not None:
        params.update(init_linear_params('head', channels * positions, num_outputs, dtype))
    return params


def init_linear_params(name, fan_in, fan_out, dtype=torch.float32):
    """{name: (fan_out, fan_in) weight, name_bias: zeros} with PyTorch's default init."""
    weight = torch.empty(fan_out, fan_in, dtype=dtype)
    torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    return {name: weight, f'{name}_bias': torch.zeros(fan_out, dtype=dtype)}


def task_batch_norm(x, weight, bias, num_tasks, fused=True):
    """Batch norm with separate batch statistics for each of num_tasks equal groups
    (inside `statistics_of_first(n)`: the statistics of each group's first n examples).

    Args:
        x: (num_tasks * M, C, ...) activations, tasks contiguous along dim 0.
        weight, bias: (C,) affine parameters.
        fused: use F.batch_norm when there is one group. Pass False under
            torch.func transforms: there F.batch_norm's second derivative came
            out wrong (torch 2.13, tests/algorithms/test_maml.py), while this composition
            of elementary ops is exact.
    Returns:
        tensor like x.
    """
    first = getattr(_mode, 'statistics_of_first', None)
    if num_tasks == 1 and fused and first is None:
        return F.batch_norm(x, None, None, weight, bias, training=True, eps=BN_EPS)
    grouped = x.unflatten(0, (num_tasks, -1))  # (T, M, C, ...)
    dims = [1] + list(range(3, grouped.dim()))
    var, mean = torch.var_mean(grouped[:, :first], dim=dims, keepdim=True, correction=0)
    scale = weight.view(-1, *[1] * (x.dim() - 2)) * torch.rsqrt(var + BN_EPS)  # (T, 1, C, 1, ...)
    shift = bias.view(-1, *[1] * (x.dim() - 2)) - mean * scale
    return (grouped * scale + shift).flatten(0, 1)


def conv_features(params, images, num_tasks=1, num_blocks=4, fused_bn=True, norm=None):
    """The conv body: (T*M, C_in, H, W) images -> (T*M, hidden) features (flattened).

    norm(x, i), if given, replaces block i's batch norm (e.g. MAML++'s per-step norm).

    Max-pool comes before ReLU: the two commute (ReLU is monotone), and pooling
    first leaves ReLU a quarter of the work.
    """
    x = images
    for i in range(num_blocks):
        x = F.conv2d(x, params[f'conv{i}'], params[f'conv{i}_bias'], padding=1)
        x = norm(x, i) if norm else task_batch_norm(x, params[f'bn{i}_weight'], params[f'bn{i}_bias'], num_tasks,
                                                    fused_bn)
        x = F.relu(F.max_pool2d(x, 2))
    return x.flatten(1)


def conv_net(params, images, num_tasks=1, num_blocks=4, fused_bn=True, norm=None):
    """Conv body then the linear head: (T*M, C_in, H, W) -> (T*M, num_outputs) logits."""
    features = conv_features(params, images, num_tasks, num_blocks, fused_bn, norm)
    return F.linear(features, params['head'], params['head_bias'])


def grouped_conv_net(params, images, channels_last=False):
    """conv_net for T tasks at once, each with its own parameters: the tasks become the groups
    of one grouped convolution per block (their channels side by side), so that batch norm's
    per-channel statistics are each task's own. The same numbers as conv_net task by task.

    Args:
        params: conv_net's tensors, each with a leading task dimension: (T, *shape).
        images: (T, M, C_in, H, W), M examples per task.
        channels_last: run the blocks on channels-last activations.
    Returns:
        (T, M, num_outputs) logits.
    """
    tasks = images.shape[0]
    x = images.transpose(0, 1).flatten(1, 2)  # (M, T * C_in, H, W)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    i = 0
    while f'conv{i}' in params:
        x = F.conv2d(x, params[f'conv{i}'].flatten(0, 1), params[f'conv{i}_bias'].flatten(), padding=1, groups=tasks)
        x = F.batch_norm(x, None, None, params[f'bn{i}_weight'].flatten(), params[f'bn{i}_bias'].flatten(),
                         training=True, eps=BN_EPS)
        x = F.relu(F.max_pool2d(x, 2))
        i += 1
    features = x.unflatten(1, (tasks, -1)).transpose(0, 1).flatten(2)  # (T, M, C * h * w), conv_net's order
    return torch.baddbmm(params['head_bias'].unsqueeze(1), features, params['head'].transpose(1, 2))


TASKS_AS_GROUPS = {conv_net: grouped_conv_net}  # a network -> its version for T tasks' parameters at once


def init_mlp_params(sizes=(1024, 500, 500), num_outputs=None, dtype=torch.float32):
    """Parameters of [linear -> BN -> LeakyReLU] per consecutive pair of sizes (+ linear head).

    Keys: fc{i}, fc{i}_bias, bn{i}_weight, bn{i}_bias, and head, head_bias
    when num_outputs is given.
    """
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        params.update(init_linear_params(f'fc{i}', fan_in, fan_out, dtype))
        params[f'bn{i}_weight'] = torch.ones(fan_out, dtype=dtype)
        params[f'bn{i}_bias'] = torch.zeros(fan_out, dtype=dtype)
    if num_outputs is not None:
        params.update(init_linear_params('head', sizes[-1], num_outputs, dtype))
    return params


def mlp_features(params, x, num_tasks=1, fused_bn=True, norm=None, dropout=0.0):
    """The MLP body of MLTI and the course's metabolism runs:
    (T*M, D) fingerprints -> (T*M, 500) features. norm: as in conv_features.
    dropout: the probability of zeroing a hidden unit, inside `training()` only."""
    i = 0
    while f'fc{i}' in params:
        x = F.linear(x, params[f'fc{i}'], params[f'fc{i}_bias'])
        x = norm(x, i) if norm else task_batch_norm(x, params[f'bn{i}_weight'], params[f'bn{i}_bias'], num_tasks,
                                                    fused_bn)
        x = F.leaky_relu(x)
        if dropout and is_training():
            x = F.dropout(x, dropout)
        i += 1
    return x


def mlp_net(params, x, num_tasks=1, fused_bn=True, norm=None, dropout=0.0):
    """MLP body then the linear head: (T*M, D_in) -> (T*M, num_outputs) logits."""
    return F.linear(mlp_features(params, x, num_tasks, fused_bn, norm, dropout), params['head'], params['head_bias'])


_mode = threading.local()


@contextlib.contextmanager
def statistics_of_first(count):
    """Inside, batch norm normalises each task's examples with the statistics of its first
    `count` examples alone (a task's support set: then every other example is normalised
    without seeing the others)."""
    before = getattr(_mode, 'statistics_of_first', None)
    _mode.statistics_of_first = count
    try:
        yield
    finally:
        _mode.statistics_of_first = before


def is_training():
    """Whether the forward passes run inside `training()` (dropout active)."""
    return getattr(_mode, 'training', False)


@contextlib.contextmanager
def training(active=True):
    """Forward passes inside are training ones (the loop's meta-update: dropout on); inside
    training(False), evaluation ones again."""
    before = is_training()
    _mode.training = active
    try:
        yield
    finally:
        _mode.training = before
