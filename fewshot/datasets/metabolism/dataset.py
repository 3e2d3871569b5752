"""TDC metabolism: eight CYP assays as 2-way few-shot tasks on molecule features
(the course's Part 4 and MLTI's "Metabolism" benchmark); by default 1024 Morgan
counts, `--features` picks others.

Data path: pickle or .tab tables (tables.py) -> one cache per featurisation (features.py)
-> per-assay, per-label pools of one split -> MoleculeTaskSampler -> TaskBatch.
"""
import functools
import os

import numpy as np
import torch

from fewshot import contracts, files, networks, tasks
from fewshot.datasets.metabolism import features as featurisation
from fewshot.datasets.metabolism.tables import (ASSAYS, HELDOUT_ASSAYS, PICKLE_NAME, TRAIN_ASSAYS, download_tables,
                                                load_pickle, table_path)
from fewshot.errors import UserError
from fewshot.flags import TASKS, Flag, probability

SPLIT_SEED = 0  # the val/test halves of the held-out assays are fixed, independent of --seed
NUM_LABELS = 2
DEFAULT_FEATURES = featurisation.DEFAULT_FEATURES

DATA_DIR = os.path.join(files.DATA_DIR, 'metabolism')  # the default --data_dir


def load_metabolism(data_dir=DATA_DIR, download=True, features=DEFAULT_FEATURES):
    """All eight assays: {assay: (features (n, width), labels (n,) int64)}; the default
    features are (n, 1024) uint8 Morgan counts.

    Sources in order: the course's pickle (its own features), the .tab tables, a download.
    """
    featurisation.feature_names(features)
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise UserError(f'--data_dir {data_dir} is a file; name the folder that holds the data')
    pickle_path = os.path.join(data_dir, PICKLE_NAME)
    if os.path.isfile(pickle_path):
        if features != DEFAULT_FEATURES:
            raise UserError(f'--features {features}: {pickle_path} holds its own features; move it out of '
                            f'{data_dir} to compute {features} from the .tab tables')
        return load_pickle(pickle_path)
    if not all(os.path.isfile(table_path(data_dir, a)) for a in ASSAYS):
        if not download:
            raise UserError(f'no metabolism data in {data_dir}: put {PICKLE_NAME} or the eight TDC CYP tables '
                            '(<name>.tab) there, or point --data_dir at them')
        download_tables(data_dir)
    return featurisation.load_features(data_dir, features)


# ---------------------------------------------------------------- splits and tasks

def heldout_halves(labels, seed=SPLIT_SEED):
    """Split one held-out assay's molecules, per label, into disjoint halves: (val rows, test rows)."""
    rng = np.random.default_rng(seed)
    val, test = [], []
    for label in range(NUM_LABELS):
        rows = rng.permutation(np.flatnonzero(labels == label))
        val.append(rows[:len(rows) // 2])
        test.append(rows[len(rows) // 2:])
    return np.sort(np.concatenate(val)), np.sort(np.concatenate(test))


def split_pools(data, split, protocol='halves'):
    """{assay: [label-0 features, label-1 features]} of one split ('train', 'val' or 'test').
    protocol 'halves': validation and test on disjoint halves of each held-out assay;
    'course': both on all of its molecules, as the course's generator does."""
    if split == 'train':
        chosen = {a: np.arange(len(data[a][1])) for a in TRAIN_ASSAYS}
    elif protocol == 'course':
        chosen = {a: np.arange(len(data[a][1])) for a in HELDOUT_ASSAYS}
    else:
        chosen = {a: heldout_halves(data[a][1])[0 if split == 'val' else 1] for a in HELDOUT_ASSAYS}
    pools = {}
    for assay, rows in chosen.items():
        features, labels = data[assay][0][rows], data[assay][1][rows]
        pools[assay] = [features[labels == label] for label in range(NUM_LABELS)]
    return pools


class MoleculeTaskSampler(contracts.Sampler):
    """2-way tasks (label 0 vs label 1) within one assay chosen uniformly at random.

    The two labels come in random order per task, as task labels 0 and 1
    (fixed_labels: task label j is assay label j, as the course's generator
    does); K support and Q query molecules per label are disjoint draws without
    replacement. Each task's group is its assay (group_names), and its
    classes are assay * 2 + assay label (num_classes in all). All randomness
    comes from one CPU generator (checkpointed). meta_batch_ci: --test also
    reports the course's CI over meta-batch means.
    """

    def __init__(self, pools, num_way, num_support, num_query, seed=0, device='cpu', where='the split',
                 fixed_labels=False, meta_batch_ci=False):
        if num_way != NUM_LABELS:
            raise UserError(f'--num_way {num_way}: metabolism tasks are 2-way (label 0 vs label 1); use --num_way 2')
        if min(num_support, num_query) < 1:
            raise UserError('--num_support and --num_query must be at least 1')
        for assay, classes in pools.items():
            smallest = min(len(c) for c in classes)
            if num_support + num_query > smallest:
                raise UserError(f'--num_support {num_support} + --num_query {num_query} exceeds the {smallest} '
                                f'molecules of the smaller label of {assay} in {where}; lower them')
        self.assays = self.group_names = list(pools)
        self.num_classes = NUM_LABELS * len(self.assays)
        self.fixed_labels, self.meta_batch_ci = fixed_labels, meta_batch_ci
        sizes = [len(c) for a in self.assays for c in pools[a]]
        self.sizes = torch.tensor(sizes).view(len(self.assays), NUM_LABELS)
        self.offsets = (torch.tensor([0] + sizes[:-1]).cumsum(0)).view(len(self.assays), NUM_LABELS)
        self.examples = torch.from_numpy(np.concatenate([c for a in self.assays for c in pools[a]])).to(device)
        self.num_support, self.num_query = num_support, num_query
        self.generator = torch.Generator().manual_seed(seed)
        self.description = f'{where}: {len(self.assays)} assays'

    def sample(self, batch_size):
        """A TaskBatch: images_support (B, 2*K, D) float32 features, labels_support (B, 2*K), ...,
        groups (B,) assays, classes (B, 2)."""
        g, draw = self.generator, self.num_support + self.num_query
        rows = torch.empty(batch_size, NUM_LABELS, draw, dtype=torch.int64)
        assays = torch.randint(len(self.assays), (batch_size,), generator=g)
        classes = torch.empty(batch_size, NUM_LABELS, dtype=torch.int64)
        for task, assay in enumerate(assays.tolist()):
            order = range(NUM_LABELS) if self.fixed_labels else torch.randperm(NUM_LABELS, generator=g).tolist()
            for way, label in enumerate(order):
                picks = torch.randperm(int(self.sizes[assay, label]), generator=g)[:draw]
                rows[task, way] = self.offsets[assay, label] + picks
                classes[task, way] = assay * NUM_LABELS + label
        device = self.examples.device
        batch = tasks.task_batch_from_draws(self.examples[rows.to(device)], self.num_support)
        batch.groups, batch.classes = assays.to(device), classes.to(device)
        return batch




# ---------------------------------------------------------------- the dataset

class Metabolism(contracts.Dataset):
    """2-way tasks (label 0 vs 1) within one CYP assay; the course's Part 4 settings by default."""
    name = 'metabolism'
    task = tasks.CLASSIFICATION
    defaults = dict(num_way=2, num_support=[5], num_query=10, batch_size=4, num_train_iterations=8000,
                    num_val_tasks=600, learning_rate=0.0005, data_dir=DATA_DIR)
    num_train_classes = NUM_LABELS * len(TRAIN_ASSAYS)  # the classes of the training sampler's tasks
    hidden_sizes = (500, 500)  # as in the course and MLTI
    flags = (
        Flag('--label_order', choices=['random', 'fixed'], default='random', log_name=True, at_test=TASKS,
             before_it_existed='random',
             help="task label j is assay label j (fixed, the course's generator) or a random order per task "
                  '(the default: a model cannot learn which label is active)'),
        Flag('--features', default=DEFAULT_FEATURES, metavar='NAME[+NAME...]', log_name=True, at_test=TASKS,
             before_it_existed='morgan',
             help=f'molecule features, computed once per name and cached: {", ".join(featurisation.FEATURES)}, '
                  'or several joined by + (morgan_counts: Morgan radius 2, 1024 counts; with the course\'s pickle '
                  'in --data_dir, its features)'),
        Flag('--validation_protocol', choices=['halves', 'course'], default='halves', log_name=True, at_test=TASKS,
             before_it_existed='halves',
             help='halves: validate and test on disjoint halves of the held-out assays; course: both on all '
                  "their molecules, as the course did (checkpoints picked on test data), --test also printing "
                  "the course's CI over meta-batch means"),
        Flag('--dropout', type=probability, default=0.0, log_name=True, before_it_existed=0.0,
             help='dropout after each hidden layer of the MLP while training (0: none)'),
    )

    def check_args(self, args):
        featurisation.feature_names(args.features)

    def recognizes_older(self, checkpoint):
        return 'datadir' in checkpoint['args']  # the course's run_metabolism.py spelt --data_dir so

    def log_dir(self, algorithm_name, hyperparameters):
        """./logs/metabolism/ALGORITHM.HYPERPARAMETERS, the course's Part 4 layout."""
        return f'./logs/metabolism/{algorithm_name}.{hyperparameters}'

    def build_sampler(self, split, args, seed, device):
        pools = split_pools(load_metabolism(args.data_dir, features=args.features), split, args.validation_protocol)
        return MoleculeTaskSampler(pools, args.num_way, args.num_support, args.num_query, seed, device,
                                   f'the metabolism {split} split', fixed_labels=args.label_order == 'fixed',
                                   meta_batch_ci=args.validation_protocol == 'course')

    def network(self, args, num_outputs=None):
        """(params, forward): 2 x [Linear -> BatchNorm1d -> LeakyReLU (-> dropout)], (T*M, D) features
        of --features -> (T*M, 500), or (T*M, num_outputs) logits through a linear head."""
        sizes = (featurisation.feature_width(args.features), *self.hidden_sizes)
        params = networks.init_mlp_params(sizes, num_outputs=num_outputs)
        forward = networks.mlp_features if num_outputs is None else networks.mlp_net
        return params, functools.partial(forward, dropout=args.dropout) if args.dropout else forward
