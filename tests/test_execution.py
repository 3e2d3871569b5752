"""Channels-last images (execution.channels_last, --channels_last): the same values, the
convolutions really run channels-last, the learners pass that layout on, and the
losses and meta-gradients equal the contiguous layout's."""
import argparse

import pytest
import torch
import torch.nn.functional as F

import maml
import protonet
from fewshot import cli, execution, networks, registry
from test_maml import copy_of, meta_gradients, random_batch, tiny_maml


@pytest.mark.parametrize('shape', [(4, 1, 6, 5), (4, 3, 6, 5), (2, 4, 1, 6, 5)])
def test_channels_last_keeps_the_values_and_a_convolution_keeps_the_layout(shape):
    images = torch.rand(shape)
    laid_out = execution.channels_last(images)
    assert torch.equal(laid_out, images) and laid_out.stride(-3) == 1
    if len(shape) == 4:
        output = F.conv2d(laid_out, torch.rand(8, shape[-3], 3, 3), padding=1)
        assert output.is_contiguous(memory_format=torch.channels_last) and not output.is_contiguous()
        # with one channel .contiguous(memory_format=...) leaves the images as they are: the conv writes NCHW
        assert F.conv2d(images.contiguous(memory_format=torch.channels_last), torch.rand(8, shape[-3], 3, 3),
                        padding=1).is_contiguous() == (shape[-3] == 1)


def recording(forward, strides):
    """forward that notes the channel stride of each input it gets."""
    def record(params, images, *rest, **options):
        strides.append(images.stride(-3))
        return forward(params, images, *rest, **options)
    return record


@pytest.mark.parametrize('channels_last', [True, False])
def test_protonet_gives_its_encoder_the_layout_it_was_told(channels_last):
    strides = []
    torch.manual_seed(0)
    encoder = networks.FunctionalNet(recording(networks.conv_features, strides), networks.init_conv_params(4, 1, 4))
    protonet.ProtoNet(encoder, channels_last=channels_last).loss(random_batch(dtype=torch.float32), 0)
    assert len(strides) == 4 and set(strides) == ({1} if channels_last else {28 * 28})


@pytest.mark.parametrize('first_order', [False, True])
def test_maml_gives_channels_last_images_to_every_pass_but_second_order_inner_steps(first_order):
    """Per task (the course's _outer_step): the inner step's pass, the post-adaptation support metric, the query pass."""
    strides = []
    learner = tiny_maml(dtype=torch.float32, first_order=first_order)
    learner.inner._network = recording(networks.conv_net, strides)
    learner.inner.layout.channels_last = True
    learner.loss(random_batch(num_tasks=2, dtype=torch.float32), 0)
    inner_step = 1 if first_order else 28 * 28  # differentiated twice: contiguous, whose double backward is faster
    assert strides == [inner_step, 1, 1, inner_step, 1, 1]
    strides.clear()
    learner.inner.layout.channels_last = False
    learner.loss(random_batch(num_tasks=2, dtype=torch.float32), 0)
    assert strides == [28 * 28] * 6


@pytest.mark.parametrize('vmap_tasks', [False, True])
def test_second_order_meta_gradient_is_the_same_in_either_layout(vmap_tasks):
    """In float64, 2 inner steps with learned inner learning rates."""
    options = dict(num_inner_steps=2, learn_inner_lrs=True, vmap_tasks=vmap_tasks)
    contiguous = tiny_maml(**options)
    channels_last = copy_of(contiguous, **options)
    channels_last.inner.layout.channels_last = True
    batch = random_batch(num_tasks=3)
    loss_a, _, grads_a = meta_gradients(contiguous, batch)
    loss_b, _, grads_b = meta_gradients(channels_last, batch)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-12, atol=0)
    for k in grads_a:
        torch.testing.assert_close(grads_b[k], grads_a[k], rtol=1e-9, atol=1e-13, msg=k)


def test_the_flag_applies_to_images_only():
    args = {value: argparse.Namespace(channels_last=value) for value in ('auto', 'yes', 'no')}
    omniglot, metabolism, sinusoid = (registry.dataset(name) for name in ('omniglot', 'metabolism', 'sinusoid'))
    assert [execution.image_layout_flag(args[v], omniglot) for v in ('auto', 'yes', 'no')] == [None, True, False]
    assert all(execution.image_layout_flag(args[v], dataset) is False for v in args
               for dataset in (metabolism, sinusoid))
    assert '--channels_last' not in {name for flag in cli.run_flags(registry.algorithm('maml'), metabolism)
                                     for name in flag.names}  # nor offered where it does not apply
    assert protonet.ProtoNet(networks.FunctionalNet(networks.conv_features, networks.init_conv_params(1, 1, 2)),
                             channels_last=None, fast=True).calls.layout.channels_last  # a CPU's default


def test_the_timed_ways_switch_the_layout_the_learners_use():
    encoder = networks.FunctionalNet(networks.conv_features, networks.init_conv_params(1, 1, 2))
    learner = protonet.ProtoNet(encoder, channels_last=None, fast=True)
    learner.execution_options()['one batched encoder call, contiguous images']()
    assert learner.calls.tasks_per_call == execution.ALL_TASKS and learner.calls.layout.channels_last is False
    learner.execution_options()['per-task encoder calls, channels-last images']()
    assert learner.calls.tasks_per_call == 1 and learner.calls.layout.channels_last is True
    meta = maml.MAML(networks.init_conv_params(1, 1, 2, num_outputs=3), networks.conv_net, vmap_tasks=False,
                     channels_last=None, fast=True)  # the loop forced, the layout to be timed
    assert list(meta.execution_options()) == ['channels-last images', 'contiguous images']
    meta.execution_options()['contiguous images']()
    assert meta.inner.layout.channels_last is False
    meta.execution_options()['channels-last images']()
    assert meta.inner.layout.channels_last is True
