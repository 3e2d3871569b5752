"""Omniglot as few-shot tasks: the class splits (the course's, Vinyals et al.'s, Lake et al.'s),
a TaskSampler over one split, and the Omniglot dataset (flags, samplers, the conv net, Lake's runs).

Data path: source files -> cache (1623, 20, S, S) uint8 (source.py; S = --image_size, 28 the
course's) -> one split's (C, 20, 1, S, S) classes and their alphabets -> tasks.TaskSampler
(within-alphabet tasks, affine distortions: augment.py) -> tasks.TaskBatch.
"""
import os

import numpy as np
import torch

from fewshot import contracts, files, networks, tasks
from fewshot.datasets.omniglot import augment, lake_runs
from fewshot.datasets.omniglot.source import IMAGE_SIZE, NUM_CHARACTERS, load_omniglot
from fewshot.errors import UserError
from fewshot.flags import TASKS, TEST, TEST_TIME, Flag, positive_int

NUM_TRAIN_CLASSES, NUM_VAL_CLASSES, NUM_TEST_CLASSES = 1100, 100, 423
SPLIT_SEED = 0  # the class split is fixed, independent of --seed
CLASS_SPLITS = ('course', 'vinyals', 'vinyals_trainval', 'lake')
EPISODES = ('random', 'within_alphabet')
IMAGE_SIZES = (IMAGE_SIZE, 56, 84, 105)
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
    vinyals_trainval: the same, training on train and val (Snell et al.'s final
        retraining): 1200 / 172 / 423; its val classes are trained on.
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
    if class_split in ('vinyals', 'vinyals_trainval'):
        order = background + evaluation
        learn, test = order[:NUM_VINYALS_TRAINVAL], order[NUM_VINYALS_TRAINVAL:]
    else:
        learn, test = background, evaluation
    val = [i for i in learn if alphabet[i] in VALIDATION_ALPHABETS]
    train = [i for i in learn if class_split == 'vinyals_trainval' or alphabet[i] not in VALIDATION_ALPHABETS]
    return {split: np.array(indices) for split, indices in (('train', train), ('val', val), ('test', test))}


# ---------------------------------------------------------------- tasks of one split

def omniglot_split(images, split, augment_rotations=False, class_split='course', names=None):
    """(C, 20, 1, S, S) uint8 tensor of one split's classes; with rotations, 4C classes.

    Under Lake's split rotations add training classes only: its validation, like its
    test (Lake's runs), is upright characters."""
    chosen = torch.from_numpy(images[split_indices(class_split, names)[split]]).unsqueeze(2)
    if rotates(split, augment_rotations, class_split):  # class 4c + r is character c rotated by r * 90 degrees
        chosen = torch.stack([torch.rot90(chosen, r, dims=(-2, -1)) for r in range(4)], dim=1)
        chosen = chosen.flatten(0, 1)
    return chosen


def rotates(split, augment_rotations, class_split):
    return augment_rotations and (class_split != 'lake' or split == 'train')


def split_alphabets(names, split, augment_rotations=False, class_split='course'):
    """(C,) int64 alphabet of each class of omniglot_split's classes (an index into the sorted alphabets)."""
    alphabets = [name.split('/')[0] for name in names]
    index = {a: i for i, a in enumerate(sorted(set(alphabets)))}
    groups = torch.tensor([index[alphabets[i]] for i in split_indices(class_split, names)[split]])
    return groups.repeat_interleave(4) if rotates(split, augment_rotations, class_split) else groups


def omniglot_sampler(split, num_way, num_support, num_query, data_dir=files.DATA_DIR, seed=0, device='cpu',
                     augment_rotations=False, class_split='course', image_size=IMAGE_SIZE, episodes='random',
                     augment_affine=False, augment_elastic=False):
    """A TaskSampler over one Omniglot split ('train', 'val' or 'test') of a class split.

    episodes: 'random' (any N classes of the split) or 'within_alphabet' (N classes of one alphabet).
    augment_affine, augment_elastic: every image of a task randomly distorted by an affine map and/or
    an elastic field (augment.random_distortion)."""
    images, names = load_omniglot(data_dir, image_size=image_size)
    examples = omniglot_split(images, split, augment_rotations, class_split, names)
    groups = split_alphabets(names, split, augment_rotations, class_split) if episodes == 'within_alphabet' else None
    return tasks.TaskSampler(examples, num_way, num_support, num_query, seed, device,
                             f'the Omniglot {split} split ({class_split})', class_groups=groups,
                             transform=augment.distortion(augment_affine, augment_elastic))


def features_per_channel(image_size, num_blocks=4):
    """Positions left of an image_size x image_size input after num_blocks halving max-pools."""
    for _ in range(num_blocks):
        image_size //= 2
    return image_size * image_size


# ---------------------------------------------------------------- the dataset

class Omniglot(contracts.Dataset):
    """N-way K-shot tasks of handwritten characters (28x28 by default); the common flags' defaults are the course's."""
    name = 'omniglot'
    task = tasks.CLASSIFICATION
    images = True  # (1, S, S) examples: a conv net
    distort = staticmethod(augment.random_affine)
    flags = (
        Flag('--split', dest='class_split', choices=CLASS_SPLITS, default='course', log_name=True, at_test=TASKS,
             help="the classes of train / val / test: the course's random one, Vinyals et al.'s, Vinyals et al.'s "
                  "training on train and val (Snell et al.'s retraining: validation then scores trained classes), "
                  "or Lake et al.'s background / evaluation (at --test: the checkpoint's)"),
        Flag('--augment_rotations', default=False, action='store_true', log_name=True, at_test=TASKS,
             help='rotations by 90/180/270 degrees become new classes, in every split but Lake\'s validation and '
                  'test (Vinyals et al.\'s split lists 4 x 423 test classes; at --test: the checkpoint\'s)'),
        Flag('--image_size', type=int, choices=IMAGE_SIZES, default=IMAGE_SIZE, log_name=True, at_test=TASKS,
             before_it_existed=IMAGE_SIZE, help="images' side in pixels: 28 the course's; larger sizes are made "
                                                'from the 105x105 originals (images_background.zip and '
                                                'images_evaluation.zip in --data_dir)'),
        Flag('--episodes', choices=EPISODES, default='random', log_name=True, at_test=TEST_TIME,
             before_it_existed='random', help="the classes of a task: any of the split's, or all from one "
                                              "alphabet (within_alphabet: like Lake's runs)"),
        Flag('--train_episodes', choices=EPISODES, log_name=True, before_it_existed=None,
             help='the classes of a training task (default: --episodes)'),
        Flag('--augment_affine', default=False, action='store_true', log_name=True, before_it_existed=False,
             help='distort every training image by a random small rotation, shear, scale and shift'),
        Flag('--augment_elastic', default=False, action='store_true', log_name=True, before_it_existed=False,
             help='distort every training image by a smooth random displacement field (elastic, Simard et al. '
                  '2003), with --augment_affine in the same resampling'),
        Flag('--num_hidden_channels', type=positive_int, default=64, log_name=True,
             help='channels of each conv block'),
        Flag('--batch_norm_init', choices=('ones', 'uniform'), default='ones', log_name=True,
             before_it_existed='ones', shapes_step=False,
             help="the conv blocks' batch-norm weights at the start: 1, or drawn from U(0, 1) as PyTorch "
                  'drew them before version 1.0 (the code of the 2017 papers)'),
        Flag('--lake_runs', nargs='?', const='', metavar='PATH', shapes_step=False, group=TEST,
             help="with --test: score Lake et al.'s 20 one-shot runs instead of sampled tasks; PATH is "
                  'all_runs.zip or its folder (none: all_runs.zip in --data_dir, downloaded if absent)'),
    )

    def check_args(self, args):
        if args.lake_runs is not None and not args.test:
            raise UserError('--lake_runs scores a trained model: add --test and the --log_dir of a --split lake run')
        if args.lake_runs and not os.path.exists(args.lake_runs):
            raise UserError(f'--lake_runs {args.lake_runs} does not exist; give all_runs.zip or its extracted folder')

    def recognizes_older(self, checkpoint):
        return 'datadir' not in checkpoint['args']  # only the course's metabolism script spelt it so

    def build_sampler(self, split, args, seed, device):
        training = split == 'train'
        episodes = (args.train_episodes or args.episodes) if training else args.episodes
        return omniglot_sampler(split, args.num_way, args.num_support, args.num_query, args.data_dir, seed, device,
                                args.augment_rotations, args.class_split, args.image_size, episodes,
                                args.augment_affine and training, args.augment_elastic and training)

    def benchmark_test(self, learner, args, log_dir, processes):
        """With --lake_runs, Lake et al.'s one-shot runs replace the sampled test tasks; otherwise None."""
        if args.lake_runs is None:
            return None
        return lake_runs.lake_test(learner, args, log_dir, processes.is_main)

    def network(self, args, num_outputs=None):
        """(params, forward): 4 x [conv3x3 -> BN -> ReLU -> maxpool2] on (T*M, 1, S, S) images, giving
        (T*M, hidden * P) features (P = 1 at 28x28, 9 at 56x56, 25 at 84x84), or (T*M, num_outputs)
        logits through a linear head."""
        params = networks.init_conv_params(4, 1, args.num_hidden_channels, num_outputs=num_outputs,
                                           positions=features_per_channel(args.image_size),
                                           batch_norm_init=args.batch_norm_init)
        return params, networks.conv_features if num_outputs is None else networks.conv_net
