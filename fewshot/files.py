"""Files: atomic writes and their stray temporaries, folders and files a flag names,
digests, the user's cache folder and checked downloads."""
import hashlib
import os
import tempfile
import urllib.request
import zipfile
import zlib

import numpy as np

from tqdm import tqdm

from fewshot.errors import UserError

DATA_DIR = './data'  # where data is downloaded to and read from unless a flag says otherwise

TEMPORARY_SUFFIX = '.tmp'


def temporary_path(path):
    """Where atomic_write writes path first: .NAME.PID.tmp beside it."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f'.{name}.{os.getpid()}{TEMPORARY_SUFFIX}')


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
    """Remove the temporary files of atomic writes whose process has died (killed
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
    """Create the folder if needed; a UserError naming the flag if it cannot hold files.
    Returns the folders it created (outermost first), so a failed run can remove them."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f'{flag} {path} is a file, not a folder; name a folder')
    created = missing_folders(path)
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise UserError(f'{flag} {path} cannot be created or written ({error.strerror}); '
                        'name a folder you can write') from None
    return created


def missing_folders(path):
    """The folders os.makedirs(path) would create, outermost first."""
    missing, path = [], os.path.abspath(path)
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing[::-1]


def remove_if_empty(folders):
    """Remove the folders that are empty, innermost first (what a failed run created)."""
    for folder in reversed(folders):
        try:
            os.rmdir(folder)
        except OSError:
            return


def writable_file(path, flag):
    """A UserError naming the flag unless path is a file that can be appended to (created if missing)."""
    if os.path.isdir(path):
        raise UserError(f'{flag} {path} is a folder; name a file')
    try:
        with open(path, 'a'):
            pass
    except OSError as error:
        raise UserError(f'{flag} {path} cannot be written ({error.strerror}); name a file you can write') from None


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


def user_cache_folder():
    """This project's folder in the user's cache (XDG_CACHE_HOME or ~/.cache)."""
    root = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(root, 'few-shot-meta')


def cache_file(data_dir, name):
    """Where a cache built from data_dir lives: data_dir/name if writable, else the user's
    cache folder, tagged by data_dir."""
    if is_writable(data_dir):
        return os.path.join(data_dir, name)
    tag = hashlib.sha256(os.path.abspath(data_dir).encode()).hexdigest()[:16]
    stem, ext = name.split('.', 1)
    return os.path.join(user_cache_folder(), f'{stem}.{tag}.{ext}')


def md5_check(name, md5):
    """A download check: raises ValueError unless the partial file's md5 is md5."""
    def check(partial):
        if file_digest(partial, 'md5') != md5:
            raise ValueError(f'md5 mismatch for {name}')
    return check


def download_file(url, target, check):
    """Download url to target with a progress bar, atomically.

    The bytes go to target + '.part'; check(partial_path) raises ValueError if
    they are wrong; only then is the file renamed to target. On any failure
    the partial file and the folders made for it are removed and the OSError or
    ValueError propagates.
    """
    created = missing_folders(os.path.dirname(os.path.abspath(target)))
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
        remove_if_empty(created)
        raise


def _arrays_digest(arrays):
    """SHA-256 of named arrays' names, shapes, types and bytes."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f'{name}:{array.dtype.str}:{array.shape};'.encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def write_keyed_arrays(path, key, **arrays):
    """Cache named arrays built from a source whose state `key` names, atomically, with their digest."""
    write = {name: np.asarray(value) for name, value in arrays.items()}
    atomic_write(path, lambda f: np.savez(f, key=key, digest=_arrays_digest(write), **write))


def read_keyed_arrays(path, key):
    """{name: array} of a write_keyed_arrays cache if it is intact and was built from the source
    state `key`, else None (missing, unreadable, stale or damaged)."""
    try:
        with np.load(path, allow_pickle=False) as cache:
            if str(cache['key']) != key:
                return None
            arrays = {name: cache[name] for name in cache.files if name not in ('key', 'digest')}
            if str(cache['digest']) != _arrays_digest(arrays):
                return None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError, zlib.error):
        return None
    return arrays
