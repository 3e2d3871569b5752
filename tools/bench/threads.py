"""Thread counts, quiet and beside a busy process: a `--fast` training step (ProtoNet 5w5s,
MAML 5w1s, each its recipe's settings and precision) at 1 and 2 torch threads, with the
machine otherwise idle and with one other process keeping a core busy.

    python bench.py --data_dir D/omniglot --only threads --repeats 10
"""
import os
import subprocess
import sys

import torch

from fewshot import cli, registry, runtime
from fewshot.engine import loop, tuning
from tools.bench.common import run_child, timed

FAST = {'protonet': ('ProtoNet 5w5s --fast', 'protonet.py', ['--fast', '--num_support', '5']),
        'maml': ('MAML 5w1s --fast', 'maml.py', ['--fast'])}


def child_fast_step(args, device):
    """Median seconds of one training step of a --fast command (args.algorithm) at args.threads threads:
    the recipe's learner, its tasks and the way to compute a step that tuning picks, in its precision."""
    torch.set_num_threads(args.threads)
    _, program, flags = FAST[args.algorithm]
    command = cli.parse(registry.program(program), [*flags, '--data_dir', args.data_dir])
    runtime.tune_cpu_allocator()
    run = command.args
    runtime.seed_everything(0)
    learner = command.build_learner(run, device)
    optimizer = loop.build_optimizer(learner, run.learning_rate)
    sampler = command.build_sampler('train', run, 0, device)
    with runtime.autocast(device, run.precision):
        tuning.choose(learner, lambda: sampler.sample(run.batch_size), tuning.run_key(command, device))
        step = lambda: loop.train_step(learner, optimizer, sampler.sample(run.batch_size), 0,  # noqa: E731
                                       run.learning_rate, run.num_train_iterations)
        return {'seconds': timed(step, args.repeats, device), 'threads': torch.get_num_threads()}


def busy_process():
    """Another process keeping one core busy (a Python loop)."""
    return subprocess.Popen([sys.executable, '-c', 'while True: pass'])


def bench_threads(data_dir, repeats):
    """The table: ms per step at each thread count, quiet and beside a busy process, and each
    count's ratio to the best of its row."""
    counts = sorted({1, os.cpu_count()})
    print(f'\n## Threads: a --fast training step, quiet and beside one busy process ({os.cpu_count()} cores, '
          f'{runtime.cpu_name()})\n')
    print('| step | machine | ' + ' | '.join(f'{n} thread{"s" * (n > 1)}: ms / step' for n in counts) + ' | ' +
          ' | '.join(f'{n} vs best' for n in counts) + ' |')
    print('|---|---|' + '---|' * 2 * len(counts))
    for algorithm, (name, _, _) in FAST.items():
        for load in ('quiet', 'one busy process'):
            other = busy_process() if load != 'quiet' else None
            try:
                times = [run_child('fast_step', data_dir, repeats, 'cpu', algorithm=algorithm, threads=n)['seconds']
                         for n in counts]
            finally:
                if other is not None:
                    other.kill()
                    other.wait()
            best = min(times)
            print(f'| {name} | {load} | ' + ' | '.join(f'{1000 * t:.0f}' for t in times) + ' | ' +
                  ' | '.join(f'{t / best:.2f}x' for t in times) + ' |', flush=True)
