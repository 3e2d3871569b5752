"""The command line of every script: the tables of algorithms and datasets,
flags parsed and checked once, and the default log dir.

A script (protonet.py, maml.py, run_metabolism.py) names the algorithms and
datasets it offers; `--algorithm` and `--dataset` pick among them (at --test,
the checkpoint's are used unless given). Defaults come, later ones winning,
from training.add_common_args (the course's Omniglot settings), the
algorithm's DEFAULTS, the dataset's DEFAULTS and the dataset's
ALGORITHM_DEFAULTS for that algorithm.
"""
import argparse
import dataclasses
import importlib

import checkpoints
import training
import util

# --algorithm and --dataset names -> their modules (the interfaces: docs/architecture.md)
ALGORITHMS = {'protonet': 'protonet', 'maml': 'maml', 'reptile': 'reptile', 'baseline': 'baseline'}
DATASETS = {'omniglot': 'omniglot', 'metabolism': 'metabolism', 'sinusoid': 'sinusoid'}


@dataclasses.dataclass(frozen=True)
class Script:
    description: str
    algorithms: tuple  # the first is the default
    datasets: tuple  # the first is the default


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line (a UserError) naming the flag, without the usage block."""

    def error(self, message):
        raise util.UserError(f'{message}; see {self.prog} --help')


def algorithm_module(name):
    return importlib.import_module(ALGORITHMS[name])


def dataset_module(name):
    return importlib.import_module(DATASETS[name])


def script_for(algorithm, dataset):
    """The command that trains and tests this algorithm on this dataset."""
    if dataset == 'metabolism':
        return f'run_metabolism.py --algorithm {algorithm}'
    command = 'protonet.py' if algorithm == 'protonet' else 'maml.py'
    return command + ('' if algorithm in ('protonet', 'maml') else f' --algorithm {algorithm}') + \
        ('' if dataset == 'omniglot' else f' --dataset {dataset}')


def _chosen(script, argv):
    """The algorithm and dataset names of the run: as given, else (at --test) the
    checkpoint's, else the script's defaults. A checkpoint to test or resume that
    another algorithm or dataset wrote is refused in one line naming its script."""
    pre = ArgumentParser(add_help=False)
    for flag in ('--algorithm', '--dataset', '--log_dir'):
        pre.add_argument(flag)
    pre.add_argument('--checkpoint_step', type=util.checkpoint_step, default=-1)
    pre.add_argument('--test', action='store_true')
    known, _ = pre.parse_known_args(argv)
    reads_checkpoint = known.log_dir and (known.test or known.checkpoint_step >= 0)
    trained = checkpoints.flags_of(known.log_dir, known.checkpoint_step) if reads_checkpoint else {}
    default_algorithm, default_dataset = (trained.get('algorithm'), trained.get('dataset')) if known.test else (None, None)
    algorithm = known.algorithm or default_algorithm or script.algorithms[0]
    dataset = known.dataset or default_dataset or script.datasets[0]
    written = (trained.get('algorithm', algorithm), trained.get('dataset', dataset))
    if written != (algorithm, dataset) or (known.algorithm is None and algorithm not in script.algorithms) or \
            (known.dataset is None and dataset not in script.datasets):
        step = known.checkpoint_step if known.checkpoint_step >= 0 else 'the newest'
        raise util.UserError(f'checkpoint {step} in {known.log_dir} was written by {written[0]} on {written[1]} '
                             f'tasks; {"test" if known.test else "resume"} it with {script_for(*written)}')
    # a name the script does not offer was typed: argparse will list the choices
    return (algorithm if algorithm in script.algorithms else script.algorithms[0],
            dataset if dataset in script.datasets else script.datasets[0])


def parse(script, argv=None):
    """Parse and check the flags once. Returns (args, defaults, algorithm module, dataset module);
    defaults: every flag's default for this algorithm and dataset."""
    algorithm_name, dataset_name = _chosen(script, argv)
    algorithm, dataset = algorithm_module(algorithm_name), dataset_module(dataset_name)
    parser = ArgumentParser(description=script.description)
    if len(script.algorithms) > 1:
        parser.add_argument('--algorithm', choices=script.algorithms, help='the meta-learning algorithm')
    if len(script.datasets) > 1:
        parser.add_argument('--dataset', choices=script.datasets, help='the tasks (flags below are this one\'s)')
    training.add_common_args(parser)
    dataset.add_args(parser)
    algorithm.add_args(parser)
    flags = vars(parser.parse_args([]))
    defaults = {**algorithm.DEFAULTS, **dataset.DEFAULTS, **dataset.ALGORITHM_DEFAULTS.get(algorithm_name, {})}
    parser.set_defaults(algorithm=algorithm_name, dataset=dataset_name,
                        **{k: v for k, v in defaults.items() if k in flags})
    args = parser.parse_args(argv)
    if dataset.TASK.name not in algorithm.TASK_KINDS:
        raise util.UserError(f'--algorithm {algorithm_name} does not do {dataset.TASK.name} '
                             f'(--dataset {dataset_name})')
    training.check_common_args(args)
    dataset.check_args(args)
    algorithm.check_args(args)
    return args, vars(parser.parse_args([])), algorithm, dataset


# flags of every algorithm named in the default log dir when not at their defaults (those a dataset
# does not define are passed over)
SHARED_LOG_NAME_FLAGS = ('class_split', 'augment_rotations', 'lr_halving_steps', 'weight_decay', 'label_order',
                         'features', 'validation_protocol', 'dropout')


def changed_flags(args, defaults, names):
    """'.name_value' for each of names whose value differs from its default; names the dataset
    does not define are passed over."""
    given = vars(args)
    return ''.join(f'.{k}_{given[k]}' for k in names if k in given and given[k] != defaults[k])


def channels_last(args, dataset):
    """--channels_last as the learners take it: None (timed, auto), True or False; False when the
    dataset's examples are not images (a dataset with images says IMAGES = True)."""
    if not getattr(dataset, 'IMAGES', False):
        return False
    return {'auto': None, 'yes': True, 'no': False}[args.channels_last]


def default_log_dir(args, defaults, algorithm):
    """./logs/ALGORITHM/DATASET.HYPERPARAMETERS (metabolism: ./logs/metabolism/ALGORITHM.HYPERPARAMETERS,
    the course's Part 4 layout)."""
    hyperparameters = algorithm.log_name(args, defaults)
    if args.dataset == 'metabolism':
        return f'./logs/metabolism/{args.algorithm}.{hyperparameters}'
    return f'./logs/{args.algorithm}/{args.dataset}.{hyperparameters}'


def main(script, argv=None):
    """Parse the flags, then train or test (training.run)."""
    args, defaults, algorithm, dataset = parse(script, argv)
    log_dir = args.log_dir or default_log_dir(args, defaults, algorithm)
    return training.run(args, log_dir, lambda run_args, device: algorithm.build_learner(run_args, dataset, device),
                        dataset.build_sampler, dataset.after_test, algorithm.TEST_TIME_FLAGS, dataset.CHECKPOINT_FLAGS,
                        dataset.benchmark_test)
