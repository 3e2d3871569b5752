"""Small helpers shared by every algorithm: confidence intervals,
atomic checkpoints, seeding, device resolution, one-line user errors, and
the data files' digests, cache locations and downloads."""
import argparse
import contextlib
import ctypes
import hashlib
import math
import os
import random
import sys
import tempfile
import urllib.request

import numpy as np
import torch


class UserError(Exception):
    """A problem with the user's input: printed as one line, no traceback."""


def run_cli(main):
    """Call `main()`; turn a UserError into `error: ...` on stderr and exit 2."""
    try:
        main()
    except UserError as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(2)


# ---------------------------------------------------------------- typed flags
# argparse types: a bad value fails while parsing, naming the flag, before any work.

def _number(text, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not {"an integer" if kind is int else "a number"}') from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f'{text} is not a finite number')
    return value


def _flag_type(kind, accept, problem):
    """An argparse type: text -> a finite kind (int or float) for which accept(value) holds,
    else the one-line error f'{value}{problem}'."""
    def parse(text):
        value = _number(text, kind)
        if not accept(value):
            raise argparse.ArgumentTypeError(f'{value}{problem}')
        return value
    return parse


positive_int = _flag_type(int, lambda v: v >= 1, ' is not a positive integer (1 or more)')
non_negative_int = _flag_type(int, lambda v: v >= 0, ' is below 0')
checkpoint_step = _flag_type(int, lambda v: v >= -1, ': give a saved step, or -1')
seed = _flag_type(int, lambda v: 0 <= v < 2 ** 32, ' is outside 0 .. 2**32 - 1')
positive_float = _flag_type(float, lambda v: v > 0, ' is not positive')
non_negative_float = _flag_type(float, lambda v: v >= 0, ' is negative')
probability = _flag_type(float, lambda v: 0 <= v < 1, ' is not in [0, 1)')


def mean_ci95(values):
    """Mean and half-width of the normal 95% confidence interval.

    1.96 * std / sqrt(n), with the population std as in the course.
    """
    values = np.asarray(values, dtype=np.float64)
    return values.mean(), 1.96 * values.std() / np.sqrt(len(values))


def course_ci95(values, batch_size):
    """The CS330 course's metabolism CI: 1.96 * the std of the means of consecutive
    meta-batches of batch_size tasks / sqrt(the number of tasks). (n,) per-task values, n a
    multiple of batch_size (a last, partial meta-batch is left out). About sqrt(batch_size)
    times narrower than mean_ci95's."""
    whole = len(values) // batch_size * batch_size
    means = np.asarray(values[:whole], dtype=np.float64).reshape(-1, batch_size).mean(1)
    return 1.96 * means.std() / np.sqrt(whole)


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


def cpu_has_bf16():
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), from /proc/cpuinfo."""
    flags = (cpuinfo('flags') or '').split()
    return 'avx512_bf16' in flags or 'amx_bf16' in flags


def autocast(device, precision):
    """The context a run computes in: --precision bf16 is torch.autocast to bfloat16 (refused in
    one line where the device has no native bfloat16), fp32 a no-op."""
    if precision == 'fp32':
        return contextlib.nullcontext()
    native = cpu_has_bf16() if device.type == 'cpu' else device.type == 'cuda' and torch.cuda.is_bf16_supported()
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
    ProtoNet step about 2x faster on a 2-core CPU (see bench.py). A no-op where
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


TEMPORARY_SUFFIX = '.tmp'


def temporary_path(path):
    """Where atomic_save writes path first: .NAME.PID.tmp beside it."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f'.{name}.{os.getpid()}{TEMPORARY_SUFFIX}')


def atomic_save(obj, path):
    """torch.save obj to path atomically (atomic_write)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write(path, write):
    """write(binary file) to a temporary file in the same folder (created with the umask's
    permissions), fsync, then rename; the temporary file is removed on any failure."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temporary_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True


def remove_stale_temporaries(folder):
    """Remove the temporary files of atomic_save calls whose process has died (killed
    mid-save): .NAME.PID.tmp, and .tmp-*.pt of older versions. Returns (count, bytes)."""
    count = size = 0
    for entry in os.scandir(folder) if os.path.isdir(folder) else []:
        name = entry.name
        parts = name.rsplit('.', 2)
        if name.startswith('.tmp-') and name.endswith('.pt'):
            stale = True
        elif name.startswith('.') and name.endswith(TEMPORARY_SUFFIX) and len(parts) == 3 and parts[1].isdigit():
            stale = int(parts[1]) != os.getpid() and not _process_alive(int(parts[1]))
        else:
            continue
        if stale and entry.is_file():
            size += entry.stat().st_size
            os.remove(entry.path)
            count += 1
    return count, size


def writable_folder(path, flag):
    """Create the folder if needed; a UserError naming the flag if it cannot hold files."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f'{flag} {path} is a file, not a folder; name a folder')
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise UserError(f'{flag} {path} cannot be created or written ({error.strerror}); '
                        'name a folder you can write') from None


def writable_file(path, flag):
    """A UserError naming the flag unless path is a file that can be appended to (created if missing)."""
    if os.path.isdir(path):
        raise UserError(f'{flag} {path} is a folder; name a file')
    try:
        with open(path, 'a'):
            pass
    except OSError as error:
        raise UserError(f'{flag} {path} cannot be written ({error.strerror}); name a file you can write') from None


def load_checkpoint(path):
    """Load a checkpoint onto the CPU, or raise a UserError naming the file."""
    if not os.path.isfile(path):
        raise UserError(f'no checkpoint at {path}; check --log_dir and --checkpoint_step')
    try:
        return torch.load(path, map_location='cpu', weights_only=False)
    except Exception as error:  # a truncated or foreign file
        raise UserError(f'checkpoint {path} cannot be read ({type(error).__name__}); '
                        'delete it and resume from an earlier step') from None


def rng_state(generator):
    """The random state a run needs to continue exactly: torch's and the sampler's."""
    state = {'torch': torch.get_rng_state(), 'sampler': generator.get_state()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state, generator):
    """Restore what rng_state saved."""
    torch.set_rng_state(state['torch'])
    generator.set_state(state['sampler'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


# ---------------------------------------------------------------- data files

def file_digest(path, algorithm='sha256'):
    """Hex digest of a file's bytes."""
    digest = hashlib.new(algorithm)
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def is_writable(folder):
    """True if folder is meant to be written: write bits set and a file can be created.

    The mode bits are checked first because root may create files even in a
    folder marked read-only, and such a folder is someone else's to keep clean.
    """
    try:
        if not os.stat(folder).st_mode & 0o222:
            return False
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def cache_file(data_dir, name):
    """Where a cache built from data_dir lives: data_dir/name if writable, else
    the user's cache folder (XDG_CACHE_HOME or ~/.cache), tagged by data_dir."""
    if is_writable(data_dir):
        return os.path.join(data_dir, name)
    root = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    tag = hashlib.sha256(os.path.abspath(data_dir).encode()).hexdigest()[:16]
    stem, ext = name.split('.', 1)
    return os.path.join(root, 'few-shot-meta', f'{stem}.{tag}.{ext}')


def download_file(url, target, check):
    """Download url to target with a progress bar, atomically.

    The bytes go to target + '.part'; check(partial_path) raises ValueError if
    they are wrong; only then is the file renamed to target. On any failure
    the partial file is removed and the OSError or ValueError propagates.
    """
    from tqdm import tqdm
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    partial = target + '.part'
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(partial, 'wb') as f, \
                tqdm(total=int(response.headers.get('Content-Length') or 0), unit='B', unit_scale=True,
                     desc=f'downloading {os.path.basename(target)}') as bar:
            for block in iter(lambda: response.read(1 << 16), b''):
                f.write(block)
                bar.update(len(block))
        check(partial)
        os.replace(partial, target)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise


def cpuinfo(field):
    """The value of the first `field` line of Linux's /proc/cpuinfo, or None."""
    try:
        with open('/proc/cpuinfo') as f:
            return next((line.split(':', 1)[1].strip() for line in f if line.startswith(field)), None)
    except OSError:
        return None


def cpu_name():
    """The processor's model name (Linux /proc/cpuinfo, else platform's guess)."""
    import platform
    return cpuinfo('model name') or platform.processor() or platform.machine()
