"""What every benchmark shares: device clocks, medians, peak memory, and running one
configuration in a fresh process (the allocator setting is process-wide, and peak memory is
read per process)."""
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTONET_GFLOP = 94.0  # one 16-task 5w5s (Q=15) step: forward + backward of the conv encoder


def synchronize(device):
    """Wait for queued device work, so that host clocks time it."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    elif device.type == 'mps':
        torch.mps.synchronize()


def matmul_gflops(device, size):
    """The device's fp32 matmul rate (TF32 off, as torch's default for matmul)."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    synchronize(device)
    return 2 * size ** 3 * 10 / (time.perf_counter() - start) / 1e9


def timed(step, repeats, device):
    """Median seconds of step() after two warm-up calls, device work included."""
    step()
    step()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory_mb(device):
    """Peak device memory allocated by torch on a GPU, the process's peak RSS on a CPU."""
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(kind, data_dir, repeats, device, processes=1, **options):
    """Run one configuration in a fresh process (or under torchrun in several); its result dict."""
    launcher = [sys.executable] if processes == 1 else \
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(processes)]
    command = [*launcher, os.path.join(ROOT, 'bench.py'), '--child', kind, '--data_dir', data_dir, '--repeats', str(repeats),
               '--device', device]
    for key, value in options.items():
        command += [f'--{key}', str(value)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return next(r for r in map(json.loads, output.strip().splitlines()[::-1]) if r.get('main', True))


def higher_installed():
    return importlib.util.find_spec('higher') is not None


def median_seconds(results):
    return statistics.median(r['seconds'] for r in results)
