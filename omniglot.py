"""Omniglot: find or download the data, decode it once into a cached uint8
array, split the characters, and sample batches of N-way K-shot tasks as
tensors on the device.

Data path: source files -> cache (1623, 20, 28, 28) uint8 -> tasks.TaskSampler -> tasks.TaskBatch.
The dataset interface (NAME ... network) is described in docs/architecture.md.
"""
import hashlib
import io
import os
import zipfile
import zlib

import numpy as np
import torch
from PIL import Image

import networks
import tasks
import util
from util import UserError

NUM_DRAWINGS = 20
IMAGE_SIZE = 28
NUM_CHARACTERS = 1623
NUM_TRAIN_CLASSES, NUM_VAL_CLASSES, NUM_TEST_CLASSES = 1100, 100, 423
SPLIT_SEED = 0  # the class split is fixed, independent of --seed
CACHE_VERSION = 1
OFFICIAL_ZIPS = {  # file name -> md5 of the official file
    'images_background.zip': '68d2efa1b9178cc56df9314c21c6e718',
    'images_evaluation.zip': '6b91aef0f799c5bb55b94e3f2daec811',
}
OFFICIAL_URL = 'https://github.com/brendenlake/omniglot/raw/master/python/{}'


# ---------------------------------------------------------------- sources

def find_source(data_dir):
    """The first Omniglot source present in data_dir, as (kind, paths).

    kind is 'resized_dir' (omniglot_resized/ folder, 28x28), 'resized_zip'
    (omniglot_resized.zip) or 'official_zips' (105x105 zips); None if none.
    """
    folder = os.path.join(data_dir, 'omniglot_resized')
    if os.path.isdir(folder):
        return 'resized_dir', [folder]
    resized_zip = os.path.join(data_dir, 'omniglot_resized.zip')
    if os.path.isfile(resized_zip):
        return 'resized_zip', [resized_zip]
    zips = [os.path.join(data_dir, name) for name in OFFICIAL_ZIPS]
    if all(os.path.isfile(path) for path in zips):
        return 'official_zips', zips
    return None


def source_key(kind, paths):
    """A string that changes whenever the source's contents may have changed."""
    digest = hashlib.sha256(f'v{CACHE_VERSION}:{kind}'.encode())
    if kind == 'resized_dir':  # hashing 32k files' bytes is slow: use names, sizes, times
        for root, dirs, files in sorted(os.walk(paths[0])):
            dirs.sort()
            for name in sorted(files):
                stat = os.stat(os.path.join(root, name))
                rel = os.path.relpath(os.path.join(root, name), paths[0])
                digest.update(f'{rel}:{stat.st_size}:{stat.st_mtime_ns};'.encode())
    else:
        for path in paths:
            digest.update(util.file_digest(path).encode())
    return digest.hexdigest()


def _png_to_ink(data, resize):
    """PNG bytes -> (28, 28) uint8 with ink = 1 (Omniglot stores ink as black)."""
    image = Image.open(io.BytesIO(data))
    if resize:  # PIL resizes a 1-bit image by nearest neighbour, as the course data was made
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE))
    pixels = np.asarray(image.convert('L'))
    if pixels.shape != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f'image of shape {pixels.shape}, expected 28x28')
    return (pixels < 128).astype(np.uint8)


def _iter_pngs(kind, paths):
    """Yield (alphabet/character, file name, png bytes, needs_resize)."""
    if kind == 'resized_dir':
        for root, _, files in os.walk(paths[0]):
            for name in files:
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


def decode_source(kind, paths):
    """Decode every image of a source.

    Returns:
        images: (1623, 20, 28, 28) uint8, ink = 1, characters sorted by
            'alphabet/character' and drawings by file name.
        names: list of the 1623 'alphabet/character' names.
    """
    characters = {}
    try:
        for character, name, data, resize in _iter_pngs(kind, paths):
            characters.setdefault(character, {})[name] = _png_to_ink(data, resize)
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

        def check(partial, name=name, md5=md5):
            if util.file_digest(partial, 'md5') != md5:
                raise ValueError(f'md5 mismatch for {name}')
        try:
            util.download_file(OFFICIAL_URL.format(name), target, check)
        except (OSError, ValueError) as error:
            raise UserError(f'could not download Omniglot ({error}); put omniglot_resized/ or '
                            f'{" and ".join(OFFICIAL_ZIPS)} in {data_dir} (or point --data_dir at them)') from None


# ---------------------------------------------------------------- cache

def cache_path(data_dir):
    """Where the decoded array lives: data_dir if writable, else the user's cache folder."""
    return util.cache_file(data_dir, 'omniglot28.cache.npz')


def _read_cache(path, key):
    """The cached images and names if the file is intact and built from this source, else None."""
    try:
        with np.load(path, allow_pickle=False) as cache:
            if str(cache['key']) != key:
                return None
            images, names = cache['images'], [str(n) for n in cache['names']]
            if str(cache['digest']) != hashlib.sha256(images.tobytes()).hexdigest():
                return None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError, zlib.error):
        return None
    if images.shape != (NUM_CHARACTERS, NUM_DRAWINGS, IMAGE_SIZE, IMAGE_SIZE):
        return None
    return images, names


def _write_cache(path, key, images, names):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f'{path}.{os.getpid()}.part.npz'
    np.savez(partial, key=key, images=images, names=np.array(names),
             digest=hashlib.sha256(images.tobytes()).hexdigest())
    os.replace(partial, path)


def load_omniglot(data_dir='./data', download=True):
    """All of Omniglot at 28x28.

    Returns:
        images: (1623, 20, 28, 28) uint8 numpy array, ink = 1.
        names: the 1623 'alphabet/character' names, sorted.
    """
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise UserError(f'--data_dir {data_dir} is a file; name the folder that holds the data')
    source = find_source(data_dir)
    if source is None:
        if not download:
            raise UserError(f'no Omniglot data in {data_dir}: put omniglot_resized/, omniglot_resized.zip '
                            f'or {" and ".join(OFFICIAL_ZIPS)} there, or point --data_dir at them')
        download_official(data_dir)
        source = find_source(data_dir)
    kind, paths = source
    key = source_key(kind, paths)
    path = cache_path(data_dir)
    cached = _read_cache(path, key) if os.path.exists(path) else None
    if cached is not None:
        return cached
    print(f'decoding Omniglot from {", ".join(paths)} (once; cached at {path})')
    images, names = decode_source(kind, paths)
    _write_cache(path, key, images, names)
    return images, names


CLASS_SPLITS = ('course', 'vinyals', 'lake')
BACKGROUND_ALPHABETS = (  # Lake et al.'s images_background; the other 20 alphabets are images_evaluation
    'Alphabet_of_the_Magi', 'Anglo-Saxon_Futhorc', 'Arcadian', 'Armenian', 'Asomtavruli_(Georgian)', 'Balinese',
    'Bengali', 'Blackfoot_(Canadian_Aboriginal_Syllabics)', 'Braille', 'Burmese_(Myanmar)', 'Cyrillic',
    'Early_Aramaic', 'Futurama', 'Grantha', 'Greek', 'Gujarati', 'Hebrew',
    'Inuktitut_(Canadian_Aboriginal_Syllabics)', 'Japanese_(hiragana)', 'Japanese_(katakana)', 'Korean', 'Latin',
    'Malay_(Jawi_-_Arabic)', 'Mkhedruli_(Georgian)', 'N_Ko', 'Ojibwe_(Canadian_Aboriginal_Syllabics)', 'Sanskrit',
    'Syriac_(Estrangelo)', 'Tagalog', 'Tifinagh')
VALIDATION_ALPHABETS = ('Armenian', 'Bengali', 'Early_Aramaic', 'Hebrew', 'Mkhedruli_(Georgian)')  # Vinyals et al.'s
NUM_VINYALS_TRAINVAL = 1200


def split_indices(class_split='course', names=None):
    """Character indices (into the cache's sorted order) of the train / val / test splits.

    course: the 1623 characters shuffled with a fixed seed, 1100 / 100 / 423.
    vinyals (Vinyals et al., 2016): the 964 background characters then the 659
        evaluation ones, each sorted by name; the first 1200 are train+val, the
        last 423 test; val is the five VALIDATION_ALPHABETS: 1028 / 172 / 423.
    lake (Lake et al., 2015): background characters to learn from, evaluation
        ones to test on; val is the same five (background) alphabets: 792 / 172 / 659.
    names: the 1623 'alphabet/character' names, sorted (vinyals and lake).
    """
    if class_split == 'course':
        order = np.random.default_rng(SPLIT_SEED).permutation(NUM_CHARACTERS)
        val_end = NUM_TRAIN_CLASSES + NUM_VAL_CLASSES
        return {'train': order[:NUM_TRAIN_CLASSES], 'val': order[NUM_TRAIN_CLASSES:val_end], 'test': order[val_end:]}
    alphabet = [name.split('/')[0] for name in names]
    background = [i for i, a in enumerate(alphabet) if a in BACKGROUND_ALPHABETS]
    evaluation = [i for i, a in enumerate(alphabet) if a not in BACKGROUND_ALPHABETS]
    if class_split == 'vinyals':
        order = background + evaluation
        learn, test = order[:NUM_VINYALS_TRAINVAL], order[NUM_VINYALS_TRAINVAL:]
    else:
        learn, test = background, evaluation
    val = [i for i in learn if alphabet[i] in VALIDATION_ALPHABETS]
    train = [i for i in learn if alphabet[i] not in VALIDATION_ALPHABETS]
    return {split: np.array(indices) for split, indices in (('train', train), ('val', val), ('test', test))}


# ---------------------------------------------------------------- the dataset interface

NAME = 'omniglot'
TASK = tasks.CLASSIFICATION
DEFAULTS = {}  # the common defaults are the course's Omniglot ones
ALGORITHM_DEFAULTS = {}
IMAGES = True  # (1, 28, 28) examples: a conv net, which --channels_last applies to
ONE_ENCODER_CALL_PER_BATCH = False  # conv activations: per-task calls are faster on a CPU (bench.py)
CHECKPOINT_FLAGS = ('class_split',)  # at --test, the trained model's value


def add_args(parser):
    """The Omniglot flags."""
    parser.add_argument('--split', dest='class_split', choices=CLASS_SPLITS, default='course',
                        help="the classes of train / val / test: the course's random one, Vinyals et al.'s, or "
                             "Lake et al.'s background / evaluation (at --test: the checkpoint's)")
    parser.add_argument('--augment_rotations', default=False, action='store_true',
                        help='rotations by 90/180/270 degrees become new classes')
    parser.add_argument('--num_hidden_channels', type=util.positive_int, default=64, help='channels of each conv block')
    parser.add_argument('--lake_runs', nargs='?', const='', metavar='PATH',
                        help="with --test: score Lake et al.'s 20 one-shot runs instead of sampled tasks; PATH is "
                             'all_runs.zip or its folder (none: all_runs.zip in --data_dir, downloaded if absent)')


def check_args(args):
    if args.lake_runs is not None and not args.test:
        raise UserError('--lake_runs scores a trained model: add --test and the --log_dir of a --split lake run')
    if args.lake_runs and not os.path.exists(args.lake_runs):
        raise UserError(f'--lake_runs {args.lake_runs} does not exist; give all_runs.zip or its extracted folder')


def build_sampler(split, args, seed, device):
    """The TaskSampler of one split ('train', 'val' or 'test') for the run's flags."""
    return omniglot_sampler(split, args.num_way, args.num_support, args.num_query, args.data_dir, seed, device,
                            args.augment_rotations, args.class_split)


after_test = None


def benchmark_test(learner, args, log_dir, processes):
    """With --lake_runs, Lake et al.'s one-shot runs replace the sampled test tasks
    (lake_runs.lake_test); otherwise None."""
    if args.lake_runs is None:
        return None
    import lake_runs  # it imports this module
    return lake_runs.lake_test(learner, args, log_dir, processes.is_main)


def network(args, num_outputs=None):
    """(params, forward): 4 x [conv3x3 -> BN -> ReLU -> maxpool2] on (T*M, 1, 28, 28) images,
    giving (T*M, hidden) features, or (T*M, num_outputs) logits through a linear head."""
    params = networks.init_conv_params(4, 1, args.num_hidden_channels, num_outputs=num_outputs)
    return params, networks.conv_features if num_outputs is None else networks.conv_net


# ---------------------------------------------------------------- the course's entry points

def omniglot_split(images, split, augment_rotations=False, class_split='course', names=None):
    """(C, 20, 1, 28, 28) uint8 tensor of one split's classes; with rotations, 4C classes."""
    chosen = torch.from_numpy(images[split_indices(class_split, names)[split]]).unsqueeze(2)
    if augment_rotations:  # class 4c + r is character c rotated by r * 90 degrees
        chosen = torch.stack([torch.rot90(chosen, r, dims=(-2, -1)) for r in range(4)], dim=1)
        chosen = chosen.flatten(0, 1)
    return chosen


def omniglot_sampler(split, num_way, num_support, num_query, data_dir='./data', seed=0,
                     device='cpu', augment_rotations=False, class_split='course'):
    """A TaskSampler over one Omniglot split ('train', 'val' or 'test') of a class split."""
    images, names = load_omniglot(data_dir)
    examples = omniglot_split(images, split, augment_rotations, class_split, names)
    return tasks.TaskSampler(examples, num_way, num_support, num_query, seed, device,
                             f'the Omniglot {split} split ({class_split})')


def get_omniglot_dataloader(split, batch_size, num_way, num_support, num_query, num_tasks_per_epoch,
                            num_workers=None, data_dir='./data', seed=0, device='cpu', augment_rotations=False):
    """The course's entry point: an iterable of task batches (num_workers is ignored)."""
    sampler = omniglot_sampler(split, num_way, num_support, num_query, data_dir, seed, device, augment_rotations)
    return tasks.TaskLoader(sampler, batch_size, num_tasks_per_epoch)
