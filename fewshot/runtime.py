"""What a run computes on: the device, bfloat16 autocast, the CPU allocator, the processor, seeds."""
import contextlib
import ctypes
import os
import platform
import random
import sys
import time

import numpy as np
import torch

from fewshot.errors import UserError


def seed_everything(seed):
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name):
    """Map a --device value (cpu, gpu, cuda, mps, auto) to a torch.device."""
    has_cuda = torch.cuda.is_available()
    has_mps = getattr(torch.backends, 'mps', None) is not None and torch.backends.mps.is_available()
    if name == 'cpu':
        return torch.device('cpu')
    if name in ('gpu', 'auto'):
        if has_cuda:
            return torch.device('cuda')
        if has_mps:
            return torch.device('mps')
        if name == 'auto':
            return torch.device('cpu')
        raise UserError('--device gpu: no CUDA or MPS device is available here; use --device cpu')
    if name == 'cuda':
        if not has_cuda:
            raise UserError('--device cuda: no CUDA device is available here; use --device cpu')
        return torch.device('cuda')
    if name == 'mps':
        if not has_mps:
            raise UserError('--device mps: no MPS device is available here; use --device cpu')
        return torch.device('mps')
    raise UserError(f'--device {name}: unknown device; use one of cpu, gpu, cuda, mps, auto')


def cpuinfo(field):
    """The value of the first `field` line of Linux's /proc/cpuinfo, or None."""
    try:
        with open('/proc/cpuinfo') as f:
            return next((line.split(':', 1)[1].strip() for line in f if line.startswith(field)), None)
    except OSError:
        return None


def process_start_time():
    """When this process started (seconds since the epoch, as time.time()): from Linux's /proc,
    else the first call's time."""
    global _first_call
    try:
        with open('/proc/self/stat') as f:
            ticks = int(f.read().rsplit(')', 1)[1].split()[19])  # field 22, starttime, after the command name
        with open('/proc/stat') as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith('btime'))
        return boot + ticks / os.sysconf('SC_CLK_TCK')
    except (OSError, ValueError, IndexError, StopIteration):
        _first_call = _first_call or time.time()
        return _first_call


_first_call = None


def cpu_name():
    """The processor's model name (Linux /proc/cpuinfo, else platform's guess)."""
    return cpuinfo('model name') or platform.processor() or platform.machine()


def cpu_has_bf16():
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), from /proc/cpuinfo."""
    flags = (cpuinfo('flags') or '').split()
    return 'avx512_bf16' in flags or 'amx_bf16' in flags


def autocast(device, precision):
    """The context a run computes in: --precision bf16 is torch.autocast to bfloat16 (refused in
    one line where the device has no native bfloat16), fp32 a no-op, auto bf16 where native."""
    native = cpu_has_bf16() if device.type == 'cpu' else device.type == 'cuda' and torch.cuda.is_bf16_supported()
    if precision == 'fp32' or (precision == 'auto' and not native):
        return contextlib.nullcontext()
    if not native:
        raise UserError(f'--precision bf16: the {device.type} device here has no native bfloat16 '
                        '(a CPU needs AVX512-BF16 or AMX); use --precision fp32')
    # no cache of cast weights: within one context spanning many optimizer steps it would keep
    # serving the first step's weights
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)


def tune_cpu_allocator():
    """Keep glibc malloc from returning big buffers to the OS after each step.

    A meta-batch allocates activations of hundreds of MB; with glibc's default
    mmap threshold every one of them is a fresh mmap, page-faulted and zeroed
    again each step. Serving them from the heap and never trimming it made a
    ProtoNet step about 2x faster on a 2-core CPU (bench.py). A no-op where
    glibc is not the allocator.
    """
    if not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL('libc.so.6')
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    ok_mmap = libc.mallopt(m_mmap_max, 0)
    ok_trim = libc.mallopt(m_trim_threshold, 2**30)
    return bool(ok_mmap and ok_trim)


# ---------------------------------------------------------------- CPU threads

LOAD_WINDOW = 0.25  # seconds over which the other processes' CPU use is measured at a run's start


def cpu_seconds_of_others(window=LOAD_WINDOW):
    """The CPU cores that other processes kept busy over the last window seconds (Linux /proc/stat,
    less this process's own CPU time), or None where it cannot be read."""
    def sample():
        with open('/proc/stat') as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
        return busy / os.sysconf('SC_CLK_TCK'), time.process_time(), time.monotonic()
    try:
        busy0, own0, wall0 = sample()
        time.sleep(window)
        busy1, own1, wall1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall1 - wall0)


def threads_for(cores, busy_elsewhere):
    """Threads for a run on a CPU of `cores` cores of which others keep `busy_elsewhere` busy: the
    cores they leave free (a core counts as taken once it is half busy), at least one. A thread
    that shares its core waits at every parallel region for its time slice: a 2-thread run beside
    one busy process took 8-200x as long as a 1-thread one (docs/benchmarks.md)."""
    return max(1, min(cores, int(cores - busy_elsewhere + 0.5)))


def choose_threads(requested):
    """The intra-op thread count of a run on a CPU, set in torch: requested (an int), else
    OMP_NUM_THREADS where set (torchrun sets 1), else (auto) threads_for this machine's load now.
    Returns (count, why)."""
    cores = os.cpu_count() or 1
    if requested != 'auto':
        count, why = int(requested), 'as --threads says'
    elif os.environ.get('OMP_NUM_THREADS', '').isdigit():
        count, why = int(os.environ['OMP_NUM_THREADS']), 'as OMP_NUM_THREADS says'
    else:
        busy = cpu_seconds_of_others()
        count = cores if busy is None else threads_for(cores, busy)
        why = (f'of {cores} cores, other processes keeping {busy:.1f} busy' if busy is not None
               else f'{cores} cores')
    torch.set_num_threads(count)
    return count, why
