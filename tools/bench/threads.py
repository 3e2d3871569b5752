"""Thread counts, quiet and beside a busy process: a `--fast` training step (ProtoNet 5w5s,
MAML 5w1s, each its recipe's settings and precision) at 1 and 2 torch threads and at the
default (--threads auto), with the machine otherwise idle and with one other process keeping
a core busy. Each count's way to compute a step is tuned once, quiet, in a tuning cache of
the benchmark's own (the loaded runs read it, as runs of settings this machine has run before).

    python bench.py --data_dir D/omniglot --only threads --repeats 10
"""
import os
import subprocess
import sys
import tempfile

import maml
import protonet
from fewshot import cli, runtime
from fewshot.engine import loop, tuning
from tools.bench.common import run_child, timed

FAST = {'protonet': ('ProtoNet 5w5s --fast', protonet, ['--fast', '--num_support', '5']),
        'maml': ('MAML 5w1s --fast', maml, ['--fast'])}


def child_fast_step(args, device):
    """Median seconds of one training step of a --fast command (args.algorithm) at args.threads threads:
    the recipe's learner, its tasks and the way to compute a step that tuning picks, in its precision."""
    threads, _ = runtime.choose_threads(args.threads if args.threads == 'auto' else int(args.threads))
    _, program, flags = FAST[args.algorithm]
    command = cli.parse(program.PROGRAM, [*flags, '--data_dir', args.data_dir], program.LEARNERS)
    runtime.tune_cpu_allocator()
    run = command.args
    runtime.seed_everything(0)
    learner = command.build_learner(run, device)
    optimizer = loop.build_optimizer(learner, run.learning_rate)
    sampler = command.build_sampler('train', run, 0, device)
    with runtime.autocast(device, run.precision):
        way = tuning.choose(learner, lambda: sampler.sample(run.batch_size), tuning.run_key(command, device),
                            path=args.tuning_cache)
        step = lambda: loop.train_step(learner, optimizer, sampler.sample(run.batch_size), 0,  # noqa: E731
                                       run.learning_rate, run.num_train_iterations)
        return {'seconds': timed(step, args.repeats, device), 'threads': threads, 'way': way}


def busy_process():
    """Another process keeping one core busy (a Python loop)."""
    return subprocess.Popen([sys.executable, '-c', 'while True: pass'])


def bench_threads(data_dir, repeats):
    """The table: ms per step at 1 and all threads and at the default (auto), quiet and beside a busy
    process, and each one's ratio to the best of its row."""
    counts = [str(n) for n in sorted({1, os.cpu_count()})] + ['auto']
    print(f'\n## Threads: a --fast training step, quiet and beside one busy process ({os.cpu_count()} cores, '
          f'{runtime.cpu_name()})\n')
    names = [f'{n} thread{"s" * (n != "1")}' if n != 'auto' else 'default (auto)' for n in counts]
    print('| step | machine | ' + ' | '.join(f'{n}: ms / step' for n in names) + ' | ' +
          ' | '.join(f'{n} vs best' for n in names) + ' | the default\'s threads |')
    print('|---|---|' + '---|' * (2 * len(counts) + 1))
    tuning_cache = os.path.join(tempfile.mkdtemp(prefix='bench-threads.'), 'tuning.json')
    for algorithm, (name, _, _) in FAST.items():
        for load in ('quiet', 'one busy process'):
            other = busy_process() if load != 'quiet' else None
            try:
                results = [run_child('fast_step', data_dir, repeats, 'cpu', algorithm=algorithm, threads=n,
                                     tuning_cache=tuning_cache) for n in counts]
            finally:
                if other is not None:
                    other.kill()
                    other.wait()
            times = [r['seconds'] for r in results]
            best = min(times)
            print(f'| {name} | {load} | ' + ' | '.join(f'{1000 * t:.0f}' for t in times) + ' | ' +
                  ' | '.join(f'{t / best:.2f}x' for t in times) + f' | {results[-1]["threads"]} |', flush=True)
