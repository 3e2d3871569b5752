"""The command line of every program: the flags parsed and checked once into a Command.

A program (protonet.py, maml.py, run_metabolism.py) offers some algorithms and
datasets (registry.PROGRAMS); `--algorithm` and `--dataset` pick among them (at
--test, the checkpoint's unless given). The parser holds the common flags, the
dataset's and the algorithm's (flags.Flag declarations). Defaults come, later
ones winning, from the flags' own (the course's Omniglot settings), the
algorithm's `defaults`, the dataset's `defaults`, the algorithm's `own_defaults`
the pair's defaults (registry.PAIR_DEFAULTS) and, with --fast, the pair's recipe (registry.FAST_RECIPES).
"""
import sys

from fewshot import flags, registry
from fewshot.command import Command
from fewshot.engine import checkpoints, runner


def _chosen(algorithms, datasets, argv):
    """The algorithm and dataset names of the run among those offered: as given, else (at --test)
    the checkpoint's, else the program's defaults (the first offered). A checkpoint to test or
    resume that another algorithm or dataset wrote is refused in one line naming its command."""
    pre = flags.ArgumentParser(add_help=False)
    for name in ('--algorithm', '--dataset'):
        pre.add_argument(name)
    for flag in flags.COMMON:
        if flag.dest in ('log_dir', 'checkpoint_step', 'test'):
            flag.add_to(pre)
    known, _ = pre.parse_known_args(argv)
    reads_checkpoint = known.log_dir and (known.test or known.checkpoint_step >= 0)
    trained = checkpoints.flags_of(known.log_dir, known.checkpoint_step) if reads_checkpoint else {}
    default_algorithm, default_dataset = (trained.get('algorithm'), trained.get('dataset')) if known.test else (None, None)
    algorithm = known.algorithm or default_algorithm or algorithms[0]
    dataset = known.dataset or default_dataset or datasets[0]
    written = (trained.get('algorithm', algorithm), trained.get('dataset', dataset))
    if written != (algorithm, dataset) or (known.algorithm is None and algorithm not in algorithms) or \
            (known.dataset is None and dataset not in datasets):
        step = known.checkpoint_step if known.checkpoint_step >= 0 else 'the newest'
        raise flags.UserError(f'checkpoint {step} in {known.log_dir} was written by {written[0]} on {written[1]} '
                              f'tasks; {"test" if known.test else "resume"} it with {registry.command_for(*written)}')
    # a name the program does not offer was typed: argparse will list the choices
    return (algorithm if algorithm in algorithms else algorithms[0],
            dataset if dataset in datasets else datasets[0])


def run_flags(algorithm, dataset):
    """Every flag of a run of this algorithm on this dataset: the common ones, the dataset's, the algorithm's."""
    return (*flags.COMMON, *(flags.IMAGE_FLAGS if dataset.images else ()), *dataset.flags, *algorithm.flags)


def parse(program, argv=None, learners=None):
    """Parse and check the flags once: a Command. learners: {algorithm name: the program's learner
    class} (protonet.py's ProtoNet, maml.py's MAML and Reptile); others are the library's."""
    argv = sys.argv[1:] if argv is None else list(argv)
    algorithms, datasets = program.offers()
    algorithm_name, dataset_name = _chosen(algorithms, datasets, argv)
    algorithm, dataset = registry.algorithm(algorithm_name), registry.dataset(dataset_name)
    pair = registry.PAIR_DEFAULTS.get((dataset_name, algorithm_name), {})
    parser = flags.ArgumentParser(prog=program.file, usage='%(prog)s [-h] [--FLAG VALUE ...]  (the flags by section below)',
                                  description=program.description, epilog=pair_epilog(
        algorithm_name, dataset_name, pair))
    if len(algorithms) > 1:
        parser.add_argument('--algorithm', choices=algorithms, help='the meta-learning algorithm')
    if len(datasets) > 1:
        parser.add_argument('--dataset', choices=datasets, help='the tasks (flags below are this one\'s)')
    recipe = registry.FAST_RECIPES.get((dataset_name, algorithm_name))
    declared = (*run_flags(algorithm, dataset), *((flags.fast_flag(recipe),) if recipe else ()))
    add_in_help_groups(parser, declared, algorithm, dataset)
    defaults = {**algorithm.defaults, **dataset.defaults, **pair, **algorithm.own_defaults}
    stray = set(defaults) - {flag.dest for flag in declared}
    if stray:
        raise ValueError(f'defaults of flags --algorithm {algorithm_name} on --dataset {dataset_name} lacks: {stray}')
    parser.set_defaults(algorithm=algorithm_name, dataset=dataset_name, **defaults)
    plain_defaults = vars(parser.parse_args([]))  # the log dir names what differs from these
    args, unknown = parser.parse_known_args(argv)
    if recipe and args.fast and not args.test:  # the recipe trains; the test keeps the course's tasks
        parser.set_defaults(**recipe)
        args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise flags.UserError(unknown_flags_line(parser, unknown, program.file, algorithms, datasets, algorithm_name,
                                                 dataset_name))
    given = flags.given_on_command_line(parser, argv)
    if not algorithm.fits(dataset):
        raise flags.UserError(f'--algorithm {algorithm_name} does not learn {dataset.task.name} tasks '
                              f'(--dataset {dataset_name}); {registry.command_for(algorithm_name, dataset_name)}')
    flags.check_common(args)
    if args.target_accuracy is not None and dataset.task.metric_kind != 'accuracy':
        raise flags.UserError(f'--target_accuracy: --dataset {dataset_name} scores by {dataset.task.metric_kind}, '
                              'not accuracy; drop it')
    dataset.check_args(args)
    algorithm.check_args(args)
    log_dir = args.log_dir or default_log_dir(args, plain_defaults, algorithm, dataset, declared)
    return Command(args, given, {flag.dest: flag for flag in declared}, algorithm, dataset, log_dir, program.file,
                   tuple(argv), dict(learners or {}))


def add_in_help_groups(parser, declared, algorithm, dataset):
    """Add the flags to the parser in --help's sections (flags.HELP_GROUPS), each from its roles and owner."""
    owner = {id(flag): kind for kind, owned in (('algorithm', algorithm.flags), ('dataset', dataset.flags))
             for flag in owned}
    sections = {group: parser.add_argument_group(title.format(algorithm=f'--algorithm {algorithm.name}'))
                for group, title in flags.HELP_GROUPS.items()}
    for flag in declared:
        flag.add_to(sections[flags.help_group(flag, owner.get(id(flag), 'common'))])


def pair_epilog(algorithm_name, dataset_name, pair):
    """--help's last line: the defaults this algorithm takes on this dataset (registry.PAIR_DEFAULTS)."""
    if not pair:
        return None
    settings = ' '.join(f'--{dest} {value}' for dest, value in pair.items())
    return f'--algorithm {algorithm_name} on --dataset {dataset_name} defaults to {settings} (fewshot/registry.py)'


def unknown_flags_line(parser, unknown, program_file, algorithms, datasets, algorithm_name, dataset_name):
    """One line on flags the run does not take, naming whose they are when another algorithm or
    dataset the program offers has them."""
    owners = {}
    for kind, names, load in (('algorithm', algorithms, registry.algorithm), ('dataset', datasets, registry.dataset)):
        for name in names:
            for flag in load(name).flags:
                for spelling in flag.names:
                    owners.setdefault(spelling, f'--{kind} {name}')
    first = next((text.split('=')[0] for text in unknown if text.startswith('--')), unknown[0])
    if first in owners:
        return (f'{first} is a flag of {owners[first]}, not of --algorithm {algorithm_name} on --dataset '
                f'{dataset_name}; drop it (see {program_file} --help)')
    return f'{flags.unknown_flag_line(parser, unknown)}; see {program_file} --help'


def default_log_dir(args, defaults, algorithm, dataset, declared):
    """The dataset's log dir for the algorithm's hyperparameters name (./logs/ALGORITHM/DATASET.HYPERPARAMETERS),
    which includes the log_name flags off their defaults (the algorithm's, the dataset's, then the common ones)."""
    ordered = sorted(declared, key=lambda f: (f not in algorithm.flags, f in flags.COMMON))
    return dataset.log_dir(args.algorithm, algorithm.log_name(args, flags.log_name_suffix(args, defaults, ordered)))


def main(program, argv=None, learners=None):
    """Parse the flags, then train or test (learners: as parse takes them)."""
    return runner.run(parse(program, argv, learners))
