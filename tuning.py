"""Pick the fastest way to compute a training step on this machine, as
cudnn.benchmark does for convolutions: at the start of a run, time a few
steps of each way the learner offers (ProtoNet: per-task or batched encoder
calls; MAML: a per-task loop or vmap over tasks; both, on images: contiguous
or channels-last), keep the fastest, and cache the choice per machine and run
settings, so later runs (and resumed ones) take the same without timing.
Every way computes the same numbers to round-off (tested); a flag forces one
(`--encoder_calls`, `--vmap_tasks`, `--channels_last`).
"""
import copy
import json
import os
import statistics
import time

import torch

import util

TUNE_SEED = 12345  # the timed tasks come from their own sampler: the run's tasks are not touched
TUNE_TASKS = 4  # tasks timed per step, at most: one batched call or vmap over a whole large meta-batch
                # could hold more memory than the run (20-way 5-shot MAML with 5 steps: tens of GB)
NOT_IN_KEY = ('log_dir', 'data_dir', 'seed', 'num_train_iterations', 'checkpoint_step', 'test', 'csv',
              'num_val_tasks', 'num_test_tasks', 'num_workers', 'lake_runs', 'support_sweep')


def machine():
    """The processor (or GPU), torch version and thread count: what the fastest way depends on."""
    return f'{util.cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads'


def combine(*choices):
    """The options of independent choices, each {name: switch} ({} when a flag forced it):
    {'name, name': switch to both}; {} when at most one way is left."""
    options = {'': lambda: None}
    for choice in filter(None, choices):
        options = {(f'{first}, {second}' if first else second): (lambda f=f, g=g: (f(), g()))
                   for first, f in options.items() for second, g in choice.items()}
    return options if len(options) > 1 else {}


def cache_path():
    root = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(root, 'few-shot-meta', 'tuning.json')


def run_key(args, device):
    """The cache key of a run: machine, device and every flag that shapes a step."""
    flags = {k: v for k, v in sorted(vars(args).items()) if k not in NOT_IN_KEY}
    gpu = torch.cuda.get_device_name(device) if device.type == 'cuda' else ''
    return json.dumps([machine(), device.type, gpu, flags], default=str)


def read_cache(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def write_cache(path, key, choice):
    """Add one choice to the cache file (atomically; an unwritable cache is skipped)."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        cache = read_cache(path)
        cache[key] = choice
        util.atomic_write(path, lambda f: f.write(json.dumps(cache, indent=1).encode()))
    except OSError:
        pass


def seconds_per_step(learner, batch, repeats=2):
    """Median seconds of the learner's objective and its backward on batch, after one warm-up,
    a backward per learner.tasks_per_backward tasks as in training."""
    import training  # it imports this module
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        training.backward_in_groups(learner, batch, 0, learner.tasks_per_backward, len(batch))
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


def choose(learner, sample_batch, args, device, path=None):
    """Switch the learner to its fastest way for this run: the cached choice, else timed now on
    up to TUNE_TASKS tasks of sample_batch() (-> a TaskBatch of the run's shape). Prints the
    choice once; returns its name, or None when the learner offers no choice (a flag forced one)."""
    options = learner.execution_options()
    if len(options) < 2:
        return None
    path = path or cache_path()
    key = run_key(args, device)
    cached = read_cache(path).get(key)
    if cached in options:
        options[cached]()
        return cached
    times = fastest(options, learner, sample_batch().select(slice(0, TUNE_TASKS)))
    best = min(times, key=times.get)
    options[best]()
    write_cache(path, key, best)
    others = ', '.join(f'{name} {1000 * s:.0f} ms' for name, s in times.items() if name != best)
    print(f'timed on this machine: {best} ({1000 * times[best]:.0f} ms per step) against {others}; '
          f'the choice is cached in {path} ({learner.execution_flags} force one)')
    return best
