"""How close bf16 autocast's loss and gradients come to fp32's on the same tasks."""
import argparse

import torch
import torch.nn.functional as F

import maml
import protonet
from fewshot import networks, runtime
from fewshot.engine import loop
from tools.bench.ours import fixed_batches

# the course's learners: what the programs train
MAML, ProtoNet = maml.MAML, protonet.ProtoNet  # the course's classes, what the programs train


def bench_bf16_gradients(data_dir, device):
    """How close bf16 autocast's gradients come to fp32's: ProtoNet 5w5s and second-order MAML
    5w1s at initialisation, on the same 16 fixed tasks (in this process)."""
    print('\n## bf16 (autocast) against fp32 gradients, the same 16 tasks, at initialisation\n')
    print('| step | loss fp32 | loss bf16 | cosine(grad bf16, grad fp32) | |grad bf16 - grad fp32| / |grad fp32| |')
    print('|---|---|---|---|---|')
    def maml_learner(steps, inner_lr):
        return MAML(networks.init_conv_params(4, 1, 64, num_outputs=5), networks.conv_net,
                         num_inner_steps=steps, inner_lr=inner_lr, device=device, vmap_tasks=False,
                         fast=True)
    setups = [('ProtoNet 5w5s', 5, lambda: ProtoNet(networks.FunctionalNet(
                   networks.conv_features, networks.init_conv_params(4, 1, 64)), device, tasks_per_call=1, fast=True)),
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
            with runtime.autocast(device, precision):
                loss, _ = loop.backward_in_groups(learner, batch, 0, learner.tasks_per_backward, len(batch))
            results.append((loss, torch.cat([p.grad.flatten() for p in learner.parameters()])))
        (loss32, grad32), (loss16, grad16) = results
        cosine = F.cosine_similarity(grad32, grad16, 0).item()
        error = ((grad16 - grad32).norm() / grad32.norm()).item()
        print(f'| {name} | {loss32:.4f} | {loss16:.4f} | {cosine:.4f} | {error:.3f} |')
