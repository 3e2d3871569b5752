"""MAML's per-task loop against grouped tasks (--group_tasks): one training step of each, timed
in turns in one process, and the graph a task holds (what decides whether tuning offers it)."""
import itertools
import statistics

import torch

import maml
from fewshot import networks, runtime
from fewshot.algorithms.maml import GROUP_GRAPH_BYTES
from fewshot.datasets.omniglot.dataset import omniglot_sampler
from fewshot.engine import loop
from tools.bench.common import timed

# the course's learners: what the programs train
MAML = maml.MAML

# (name, hidden channels, queries per class, tasks per step, learned inner LRs, precision)
CONFIGS = [('`--fast` (32 channels, 5 queries, 8 tasks)', 32, 5, 8, True, 'bf16'),
           ('`--fast --precision fp32`', 32, 5, 8, True, 'fp32'),
           ("the course's (64 channels, 15 queries, 16 tasks)", 64, 15, 16, False, 'fp32')]


def meta_update_on(learner, batches):
    """step(): one meta-update of the learner on the next of the batches, in turn."""
    optimizer, next_batch = loop.build_optimizer(learner, 1e-3), itertools.cycle(batches).__next__
    return lambda: loop.meta_update(learner, optimizer, next_batch(), 0, 1e-3, 1,
                                    tasks_per_backward=learner.tasks_per_backward)


def bench_group_tasks(data_dir, repeats, device):
    """A 5-way 1-shot second-order step (one inner step) per config: the per-task loop and grouped
    tasks, both with channels-last images, timed in three alternating rounds (common.timed each);
    the median of the rounds."""
    print('\n## MAML: the per-task loop against grouped tasks (`--group_tasks`), 5-way 1-shot, one '
          'second-order inner step, channels-last images\n')
    print('| settings | precision | graph per task (MiB) | offered to tuning | per-task loop ms | grouped ms | '
          'loop / grouped |')
    print('|---|---|---|---|---|---|---|')
    for name, channels, queries, num_tasks, learn_lrs, precision in CONFIGS:
        sampler = omniglot_sampler('train', 5, 1, queries, data_dir, seed=0, device=device)
        batches = [sampler.sample(num_tasks) for _ in range(3)]
        torch.manual_seed(0)
        params = networks.init_conv_params(4, 1, channels, num_outputs=5)
        learners = [MAML(params, networks.conv_net, learn_inner_lrs=learn_lrs, device=device, vmap_tasks=False,
                         channels_last=True, group_tasks=grouped, fast=True) for grouped in (False, None)]
        times = {False: [], True: []}
        with runtime.autocast(device, precision):
            graph = learners[1].graph_bytes(batches[0])
            offered = len(learners[1].execution_options(batches[0].select(slice(0, 4)))) > 0
            learners[1].inner.group_tasks = True
            steps = {learner.inner.group_tasks: meta_update_on(learner, batches) for learner in learners}
            for _ in range(3):  # rounds in turn, so that a slower stretch of the machine hits both
                for grouped, step in steps.items():
                    times[grouped].append(timed(step, repeats, device))
        per_task, grouped = (1000 * statistics.median(times[k]) for k in (False, True))
        print(f'| {name} | {precision} | {graph / 2 ** 20:.1f} | {"yes" if offered else "no"} '
              f'(groups of {GROUP_GRAPH_BYTES // graph}) | {per_task:.0f} | {grouped:.0f} | '
              f'{per_task / grouped:.2f}x |')
