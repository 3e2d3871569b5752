"""This project's training steps as the benchmarks time them: through the training loop,
on sampled tasks or on fixed ones."""
import itertools

import torch

import maml
import protonet
from fewshot import networks, runtime
from fewshot.datasets.omniglot.dataset import omniglot_sampler
from fewshot.engine import distributed, loop
from fewshot.flags import auto_yes_no
from tools.bench.common import timed

# the course's learners: what the programs train
MAML, ProtoNet = maml.MAML, protonet.ProtoNet  # the course's classes, what the programs train


def timed_training_step(learner, sampler, args, device):
    """Median seconds of one meta-update of 16 tasks by the training loop, sampling included
    (under torchrun: each process's share, gradients summed across the processes)."""
    processes = distributed.start(device)
    optimizer = loop.build_optimizer(learner, 1e-3)
    step = lambda: loop.train_step(learner, optimizer, sampler.sample(16), 0, 1e-3, 1, processes)  # noqa: E731
    return {'seconds': timed(step, args.repeats, device), 'main': processes.is_main}


def child_protonet(args, device):
    if args.allocator == 'tuned' and device.type == 'cpu':
        runtime.tune_cpu_allocator()
    sampler = omniglot_sampler('train', 5, 5, 15, args.data_dir, seed=0, device=device)
    encoder = networks.FunctionalNet(networks.conv_features, networks.init_conv_params(4, 1, 64))
    learner = ProtoNet(encoder, device, tasks_per_call=args.tasks_per_call,
                                channels_last=auto_yes_no(args.channels_last), fast=True)
    return timed_training_step(learner, sampler, args, device)


def child_maml(args, device):
    if device.type == 'cpu':
        runtime.tune_cpu_allocator()
    sampler = omniglot_sampler('train', 5, 1, 15, args.data_dir, seed=0, device=device)
    learner = MAML(networks.init_conv_params(4, 1, 64, num_outputs=5), networks.conv_net,
                        num_inner_steps=args.inner_steps, inner_lr=args.inner_lr, learn_inner_lrs=bool(args.learn_inner_lrs),
                        first_order=bool(args.first_order), device=device, vmap_tasks=args.vmap == 'yes',
                        channels_last=auto_yes_no(args.channels_last), fast=True)
    return timed_training_step(learner, sampler, args, device)


def fixed_batches(args, device):
    """Three seeded args.way-way args.shot-shot batches of args.tasks tasks (15 queries per
    class), the same in every process."""
    sampler = omniglot_sampler('train', args.way, args.shot, 15, args.data_dir, seed=0, device=device)
    return [sampler.sample(args.tasks) for _ in range(3)]


def child_maml_fixed(args, device):
    """Our second-order MAML through the training loop on the fixed batches (no sampling)."""
    if device.type == 'cpu':
        runtime.tune_cpu_allocator()
    torch.manual_seed(0)
    learner = MAML(networks.init_conv_params(4, 1, 64, num_outputs=args.way), networks.conv_net,
                        num_inner_steps=args.inner_steps, inner_lr=args.inner_lr, device=device,
                        vmap_tasks=args.vmap == 'yes', channels_last=auto_yes_no(args.channels_last), fast=True)
    return fixed_batch_steps(learner, args, device)


def child_protonet_fixed(args, device):
    """Our ProtoNet through the training loop on the fixed batches (no sampling), per-task encoder calls."""
    if device.type == 'cpu':
        runtime.tune_cpu_allocator()
    torch.manual_seed(0)
    encoder = networks.FunctionalNet(networks.conv_features, networks.init_conv_params(4, 1, 64))
    learner = ProtoNet(encoder, device, tasks_per_call=args.tasks_per_call,
                                channels_last=auto_yes_no(args.channels_last), fast=True)
    return fixed_batch_steps(learner, args, device)


def fixed_batch_steps(learner, args, device):
    """Median seconds of the training loop's meta-update on the fixed batches, cycled, in
    args.precision (bf16: autocast)."""
    optimizer = loop.build_optimizer(learner, 1e-3)
    next_batch = itertools.cycle(fixed_batches(args, device)).__next__
    per_backward = learner.tasks_per_backward if args.tasks_per_backward < 0 else args.tasks_per_backward

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == 'bf16'):
            loop.train_step(learner, optimizer, next_batch(), 0, 1e-3, 1, tasks_per_backward=per_backward)
    return {'seconds': timed(step, args.repeats, device)}
