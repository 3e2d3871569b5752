"""The GPU paths (ProtoNet's one batched encoder call, MAML's vmap over tasks)
against the CPU defaults (per-task calls, a per-task loop), in float64.

CI has no GPU, so these skip there; run them on a CUDA machine with
`python -m pytest tests/algorithms/test_gpu.py`.
"""
import argparse

import pytest
import torch

import maml

import protonet

from test_maml import meta_gradients, take_step, tiny_maml
from test_maml import random_batch as maml_batch
from test_protonet import random_batch, tiny_encoder
from fewshot.engine import checkpoints
from fewshot.engine import loop
from fewshot import execution
from fewshot import networks

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device here: GPU paths not tested')


def close(a, b):
    return torch.allclose(a.cpu(), b.cpu(), rtol=1e-9, atol=1e-12)


def test_protonet_gpu_default_path_equals_cpu_per_task_calls():
    batch = random_batch(num_tasks=4)
    losses, grads = [], []
    for device in ('cpu', 'cuda'):
        encoder = tiny_encoder()
        learner = protonet.ProtoNet(encoder, device)
        loss, accuracy = learner.task_metrics(batch.to(device))
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad for p in encoder.parameters()])
    assert execution.default_tasks_per_call('cuda', 4) == 4  # the path under test is the batched one
    assert close(*losses)
    assert all(close(g_cpu, g_gpu) for g_cpu, g_gpu in zip(*grads))


def test_maml_gpu_vmap_equals_cpu_loop_second_order_with_learned_lrs():
    cpu = tiny_maml(num_inner_steps=2, learn_inner_lrs=True)
    gpu = maml.MAML(params=networks.init_conv_params(4, 1, 4, num_outputs=3, dtype=torch.float64),
                    forward=networks.conv_net, num_inner_steps=2, inner_lr=0.3, learn_inner_lrs=True, device='cuda')
    gpu.load_state(cpu.state())
    assert gpu.inner.vmap_tasks and not cpu.inner.vmap_tasks  # each device's default
    batch = maml_batch(num_tasks=3)
    loss_cpu, _, grads_cpu = meta_gradients(cpu, batch)
    loss_gpu, _, grads_gpu = meta_gradients(gpu, batch.to('cuda'))
    assert close(loss_cpu, loss_gpu)
    assert grads_cpu.keys() == grads_gpu.keys()
    assert all(close(grads_cpu[k], grads_gpu[k]) for k in grads_cpu)


def test_checkpoint_written_on_gpu_resumes_on_cpu(tmp_path):
    gpu = maml.MAML(params=networks.init_conv_params(4, 1, 4, num_outputs=3, dtype=torch.float64),
                    forward=networks.conv_net, num_inner_steps=1, inner_lr=0.3, device='cuda')
    batch = maml_batch(num_tasks=2)
    gpu_optimizer = take_step(gpu, batch.to('cuda'), 0)  # optimizer state exists on the GPU
    args = argparse.Namespace(algorithm='maml', dataset='omniglot')
    checkpoints.save(str(tmp_path), 0, gpu, gpu_optimizer, torch.Generator(), args, 0.5)
    cpu = tiny_maml()
    cpu_optimizer = loop.build_optimizer(cpu, 1e-3)
    checkpoints.resume(checkpoints.load(str(tmp_path), 0), cpu, cpu_optimizer, torch.Generator())
    assert all(close(cpu.inner.meta_parameters[k], v) for k, v in gpu.inner.meta_parameters.items())
    saved, loaded = gpu_optimizer.state_dict()['state'], cpu_optimizer.state_dict()['state']
    assert saved.keys() == loaded.keys() and len(saved) > 0
    for key in saved:
        assert all(torch.equal(saved[key][name].cpu(), loaded[key][name]) for name in saved[key])
        assert all(value.device.type == 'cpu' for value in loaded[key].values())
    take_step(gpu, batch.to('cuda'), 1, gpu_optimizer)
    take_step(cpu, batch, 1, cpu_optimizer)  # the CPU copy takes the same next step
    # Conv biases feed batch norm, so their meta-gradient is round-off noise that Adam
    # normalises into a +-lr step; every other parameter must agree.
    compared = [k for k in gpu.inner.meta_parameters if not (k.startswith('conv') and k.endswith('_bias'))]
    assert all(close(cpu.inner.meta_parameters[k], gpu.inner.meta_parameters[k]) for k in compared)
