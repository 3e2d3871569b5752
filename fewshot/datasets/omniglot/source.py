"""Omniglot's images: find or download the data and decode it once into a cached
(1623, 20, S, S) uint8 array, ink = 1, per image size S (28: the course's; others are
made from the 105x105 originals)."""
import hashlib
import io
import os
import zipfile
import zlib

import numpy as np
from PIL import Image

from fewshot import files
from fewshot.errors import UserError

NUM_DRAWINGS = 20
IMAGE_SIZE = 28  # the course's
ORIGINAL_SIZE = 105
NUM_CHARACTERS = 1623
CACHE_VERSION = 2
OFFICIAL_ZIPS = {  # file name -> md5 of the official file
    'images_background.zip': '68d2efa1b9178cc56df9314c21c6e718',
    'images_evaluation.zip': '6b91aef0f799c5bb55b94e3f2daec811',
}
OFFICIAL_URL = 'https://github.com/brendenlake/omniglot/raw/master/python/{}'


# ---------------------------------------------------------------- sources

def find_source(data_dir, image_size=IMAGE_SIZE):
    """The first Omniglot source present in data_dir, as (kind, paths).

    kind is 'resized_dir' (omniglot_resized/ folder, 28x28), 'resized_zip'
    (omniglot_resized.zip) or 'official_zips' (105x105 zips); None if none.
    Sizes other than 28 are made from the official zips only.
    """
    zips = [os.path.join(data_dir, name) for name in OFFICIAL_ZIPS]
    if image_size != IMAGE_SIZE:
        return ('official_zips', zips) if all(os.path.isfile(path) for path in zips) else None
    folder = os.path.join(data_dir, 'omniglot_resized')
    if os.path.isdir(folder):
        return 'resized_dir', [folder]
    resized_zip = os.path.join(data_dir, 'omniglot_resized.zip')
    if os.path.isfile(resized_zip):
        return 'resized_zip', [resized_zip]
    if all(os.path.isfile(path) for path in zips):
        return 'official_zips', zips
    return None


def source_key(kind, paths):
    """A string that changes whenever the source's contents may have changed."""
    digest = hashlib.sha256(f'v{CACHE_VERSION}:{kind}'.encode())
    if kind == 'resized_dir':  # hashing 32k files' bytes is slow: use names, sizes, times
        for root, dirs, found in sorted(os.walk(paths[0])):
            dirs.sort()
            for name in sorted(found):
                stat = os.stat(os.path.join(root, name))
                rel = os.path.relpath(os.path.join(root, name), paths[0])
                digest.update(f'{rel}:{stat.st_size}:{stat.st_mtime_ns};'.encode())
    else:
        for path in paths:
            digest.update(files.file_digest(path).encode())
    return digest.hexdigest()


def png_to_ink(data, image_size=IMAGE_SIZE, resize=True):
    """PNG bytes -> (S, S) uint8 with ink = 1 (Omniglot stores ink as black), S = image_size;
    resize=False: an image of another size is an error (a resized source's files).

    To 28x28, PIL's resize of the 1-bit image (nearest neighbour), as the course's data
    was made; to other sizes, the mean of the covered pixels (box filter), ink where
    at least half is ink, so thin strokes are neither dropped nor thickened."""
    image = Image.open(io.BytesIO(data))
    if resize and image.size != (image_size, image_size):
        if image_size == IMAGE_SIZE:
            image = image.resize((image_size, image_size))
        else:
            image = image.convert('L').resize((image_size, image_size), Image.BOX)
    pixels = np.asarray(image.convert('L'))
    if pixels.shape != (image_size, image_size):
        raise ValueError(f'image of shape {pixels.shape}, expected {image_size}x{image_size}')
    return (pixels < 128).astype(np.uint8)


def _iter_pngs(kind, paths):
    """Yield (alphabet/character, file name, png bytes, needs_resize)."""
    if kind == 'resized_dir':
        for root, _, found in os.walk(paths[0]):
            for name in found:
                if name.endswith('.png'):
                    character = os.path.relpath(root, paths[0]).replace(os.sep, '/')
                    with open(os.path.join(root, name), 'rb') as f:
                        yield character, name, f.read(), False
        return
    for path in paths:
        with zipfile.ZipFile(path) as archive:
            for entry in archive.namelist():
                parts = entry.split('/')
                if entry.endswith('.png') and len(parts) == 4:  # top/alphabet/character/file
                    yield f'{parts[1]}/{parts[2]}', parts[3], archive.read(entry), kind == 'official_zips'


def decode_source(kind, paths, image_size=IMAGE_SIZE):
    """Decode every image of a source at image_size x image_size.

    Returns:
        images: (1623, 20, S, S) uint8, ink = 1, characters sorted by
            'alphabet/character' and drawings by file name.
        names: list of the 1623 'alphabet/character' names.
    """
    characters = {}
    try:
        for character, name, data, resize in _iter_pngs(kind, paths):
            characters.setdefault(character, {})[name] = png_to_ink(data, image_size, resize)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, Image.DecompressionBombError) as error:
        raise UserError(f'Omniglot source {", ".join(paths)} is unreadable ({error}); '
                        'replace it with a complete copy or delete it to download again') from None
    names = sorted(characters)
    bad = [n for n in names if len(characters[n]) != NUM_DRAWINGS]
    if len(names) != NUM_CHARACTERS or bad:
        raise UserError(f'Omniglot source {", ".join(paths)} is incomplete: {len(names)} characters '
                        f'(expected {NUM_CHARACTERS}), {len(bad)} without {NUM_DRAWINGS} drawings; '
                        'replace it with a complete copy')
    images = np.stack([np.stack([characters[n][f] for f in sorted(characters[n])]) for n in names])
    return images, names


def download_official(data_dir):
    """Download the two official zips with a progress bar; verify md5; rename when complete."""
    for name, md5 in OFFICIAL_ZIPS.items():
        target = os.path.join(data_dir, name)
        if os.path.isfile(target):
            continue

        try:
            files.download_file(OFFICIAL_URL.format(name), target, files.md5_check(name, md5))
        except (OSError, ValueError) as error:
            raise UserError(f'could not download Omniglot ({error}); put omniglot_resized/ or '
                            f'{" and ".join(OFFICIAL_ZIPS)} in {data_dir} (or point --data_dir at them)') from None


# ---------------------------------------------------------------- cache

def cache_path(data_dir, image_size=IMAGE_SIZE):
    """Where the decoded array lives: data_dir if writable, else the user's cache folder."""
    return files.cache_file(data_dir, f'omniglot{image_size}.cache.npz')


def _read_cache(path, key, image_size=IMAGE_SIZE):
    """The cached images and names if the file is intact and built from this source, else None."""
    cache = files.read_keyed_arrays(path, key)
    if cache is None or set(cache) != {'images', 'names'} or \
            cache['images'].shape != (NUM_CHARACTERS, NUM_DRAWINGS, image_size, image_size):
        return None
    return cache['images'], [str(n) for n in cache['names']]


_LOADED = {}  # (data dir, image size, source and its files' sizes and times) -> (images, names): one load a process


def _source_state(data_dir, image_size, source):
    kind, paths = source
    stats = [(os.path.abspath(p), os.stat(p)) for p in paths]
    return os.path.abspath(data_dir), image_size, kind, tuple((p, s.st_size, s.st_mtime_ns) for p, s in stats)


def load_omniglot(data_dir=files.DATA_DIR, download=True, image_size=IMAGE_SIZE):
    """All of Omniglot at image_size x image_size (28: the course's).

    Returns:
        images: (1623, 20, S, S) uint8 numpy array, ink = 1.
        names: the 1623 'alphabet/character' names, sorted.
    """
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise UserError(f'--data_dir {data_dir} is a file; name the folder that holds the data')
    source = find_source(data_dir, image_size)
    if source is None:
        if not download:
            needed = (f'omniglot_resized/, omniglot_resized.zip or {" and ".join(OFFICIAL_ZIPS)}'
                      if image_size == IMAGE_SIZE else f'{" and ".join(OFFICIAL_ZIPS)} (--image_size {image_size} '
                                                       f'is made from the {ORIGINAL_SIZE}x{ORIGINAL_SIZE} originals)')
            raise UserError(f'no Omniglot data in {data_dir}: put {needed} there, or point --data_dir at them')
        download_official(data_dir)
        source = find_source(data_dir, image_size)
    state = _source_state(data_dir, image_size, source)
    if state not in _LOADED:
        _LOADED[state] = _read_or_decode(data_dir, image_size, *source)
    return _LOADED[state]


def _read_or_decode(data_dir, image_size, kind, paths):
    """(images, names) from the cache when it was built from this source, else decoded and cached;
    the images read-only (one array a process, shared by its samplers)."""
    key = source_key(kind, paths)
    path = cache_path(data_dir, image_size)
    cached = _read_cache(path, key, image_size) if os.path.exists(path) else None
    if cached is None:
        print(f'decoding Omniglot from {", ".join(paths)} (once; cached at {path})')
        cached = decode_source(kind, paths, image_size)
        files.write_keyed_arrays(path, key, images=cached[0], names=np.array(cached[1]))
    cached[0].flags.writeable = False
    return cached
