"""Pick the fastest way to compute a training step on this machine, as
cudnn.benchmark does for convolutions: at the start of a run, time a few
steps of each way the learner offers (Learner.execution_options: ProtoNet's
per-task or batched encoder calls, MAML's per-task loop or vmap over tasks,
both with contiguous or channels-last images), keep the fastest, and cache the
choice per machine and run settings, so later runs (and resumed ones) take the
same without timing. Every way computes the same numbers to round-off (tested);
a flag forces one (the flags with the execution role).
"""
import copy
import json
import os
import statistics
import time

import torch

from fewshot import files, runtime
from fewshot.engine import loop

TUNE_SEED = 12345  # the timed tasks come from their own sampler: the run's tasks are not touched
TUNE_TASKS = 4  # tasks timed per step, at most: one batched call or vmap over a whole large meta-batch
                # could hold more memory than the run (20-way 5-shot MAML with 5 steps: tens of GB)


def machine():
    """The processor (or GPU), torch version and thread count: what the fastest way depends on."""
    return f'{runtime.cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads'


def cache_path():
    return os.path.join(files.user_cache_folder(), 'tuning.json')


def run_key(command, device):
    """The cache key of a run: machine, device, algorithm, dataset and every flag that shapes a step."""
    values = vars(command.args)
    shaping = {dest: values[dest] for dest, flag in sorted(command.flags.items()) if flag.shapes_step}
    gpu = torch.cuda.get_device_name(device) if device.type == 'cuda' else ''
    return json.dumps([machine(), device.type, gpu, command.algorithm.name, command.dataset.name, shaping],
                      default=str)


def read_cache(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def write_cache(path, key, choice):
    """Add one choice to the cache file (atomically; an unwritable cache is skipped)."""
    try:
        cache = read_cache(path)
        cache[key] = choice
        files.atomic_write(path, lambda f: f.write(json.dumps(cache, indent=1).encode()))
    except OSError:
        pass


def seconds_per_step(learner, batch, repeats=2):
    """Median seconds of the learner's objective and its backward on batch, after one warm-up,
    a backward per learner.tasks_per_backward tasks as in training."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        loop.backward_in_groups(learner, batch, 0, learner.tasks_per_backward, len(batch))
        if batch.images_support.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def fastest(options, learner, batch):
    """{name: seconds} of each way; the learner's state, gradients and the global RNG are left as found."""
    saved = copy.deepcopy(learner.state())
    times = {}
    with torch.random.fork_rng(devices=[]):
        for name, use in options.items():
            use()
            times[name] = seconds_per_step(learner, batch)
    learner.load_state(saved)
    for tensor in learner.parameters():
        tensor.grad = None
    return times


def choose(learner, sample_batch, key, path=None, forcing=()):
    """Switch the learner to its fastest way for this run: the cached choice under key, else
    timed now on up to TUNE_TASKS tasks of sample_batch() (-> a TaskBatch of the run's shape).
    Prints the choice once, naming the flags that would force one (forcing); returns its name,
    or None when the learner offers no choice."""
    if len(learner.execution_options()) < 2:
        return None
    batch = sample_batch().select(slice(0, TUNE_TASKS))
    options = learner.execution_options(batch)  # those whose trial on batch fits (MAML's grouped tasks)
    if len(options) < 2:
        return None
    path = path or cache_path()
    cached = read_cache(path).get(key)
    if cached in options:
        options[cached]()
        return cached
    print(f'timing {len(options)} ways to compute a step on this machine (once: the choice is cached)', flush=True)
    times = fastest(options, learner, batch)
    best = min(times, key=times.get)
    options[best]()
    write_cache(path, key, best)
    slowest = max(times, key=times.get)
    print(f'fastest way here: {best} ({1000 * times[best]:.0f} ms a step, {times[slowest] / times[best]:.2f}x '
          f'the slowest); cached' + (f'; {", ".join(forcing)} force one' if forcing else ''))
    return best
