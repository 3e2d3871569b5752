"""NCHW against channels-last images, op by op and for whole passes, and what layout the first
convolution writes for each way of laying out its one-channel input."""
import torch
import torch.nn.functional as F

from fewshot import execution, networks
from tools.bench.common import timed


def bench_layout(repeats, device):
    """The first block's operations on one per-task call's activations (100 images, 64 channels,
    28 x 28), NCHW against channels-last, forward and backward; and the layout the first
    convolution writes for each way of laying out its one-channel input."""
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
        last = timed(forward_backward(op, execution.channels_last(activations)), repeats, torch.device(device))
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
            last = timed(lambda: step(execution.channels_last(images[:size])), repeats, torch.device(device))
            print(f'| {size} images: {name} | {1000 * nchw:.1f} | {1000 * last:.1f} | {nchw / last:.2f}x |')
    print('\n| first convolution\'s one-channel input | its output is channels-last | ms (forward, weight backward) |')
    print('|---|---|---|')
    inputs = [('contiguous', images), ('.contiguous(memory_format=torch.channels_last)',
                                        images.contiguous(memory_format=torch.channels_last)),
              ('execution.channels_last (strides set)', execution.channels_last(images))]
    for name, x in inputs:
        output = F.conv2d(x, conv0, padding=1)
        grad = torch.randn_like(output)
        seconds = timed(lambda: torch.autograd.grad(F.conv2d(x, conv0, padding=1), conv0, grad), repeats,
                        torch.device(device))
        print(f'| {name} | {output.is_contiguous(memory_format=torch.channels_last) and not output.is_contiguous()} '
              f'| {1000 * seconds:.2f} |')
