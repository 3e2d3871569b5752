"""The one table that names the datasets and algorithms, and the programs that offer them.
Register a new dataset or algorithm with one line: its name and where its class lives."""
import dataclasses
import importlib

from fewshot import contracts

# name -> 'module:class'; the order is the order of --help's choices and of the programs' defaults
DATASETS = {
    'omniglot': 'fewshot.datasets.omniglot.dataset:Omniglot',
    'sinusoid': 'fewshot.datasets.sinusoid:Sinusoid',
    'metabolism': 'fewshot.datasets.metabolism.dataset:Metabolism',
}
ALGORITHMS = {
    'protonet': 'fewshot.algorithms.protonet:ProtoNetAlgorithm',
    'maml': 'fewshot.algorithms.maml:MAMLAlgorithm',
    'reptile': 'fewshot.algorithms.reptile:ReptileAlgorithm',
    'baseline': 'fewshot.algorithms.baseline:BaselineAlgorithm',
}
# per (dataset, algorithm): defaults over both's own (shown by --help), and what --fast sets (flags given override it)
PAIR_DEFAULTS = {
    ('sinusoid', 'maml'): dict(inner_lr=0.01), ('sinusoid', 'reptile'): dict(inner_lr=0.01),  # Finn et al.'s
    ('metabolism', 'maml'): dict(inner_lr=0.1), ('metabolism', 'reptile'): dict(inner_lr=0.1),
}
# --fast: what reached the course's validation targets (ProtoNet 5w5s 0.99, MAML 5w1s 0.97) in the least wall
# time measured on a 2-core CPU, lever by lever (docs/benchmarks.md, bench.py --only time_to_target)
FAST_RECIPES = {
    ('omniglot', 'protonet'): dict(train_num_way=60, train_num_query=5, batch_size=1, learning_rate=0.002,
                                   val_interval=25, num_val_tasks=200, precision='auto'),
    ('omniglot', 'maml'): dict(train_num_query=5, batch_size=8, learning_rate=0.003, lr_halving_steps=700,
                               learn_inner_lrs=True, num_hidden_channels=32, precision='auto'),
}

def _load(path, contract, what):
    module, name = path.split(':')
    return contracts.check(getattr(importlib.import_module(module), name), contract, what)()


def dataset(name):
    """The registered Dataset called name."""
    return _load(DATASETS[name], contracts.Dataset, f'dataset {name!r}')


def algorithm(name):
    """The registered Algorithm called name."""
    return _load(ALGORITHMS[name], contracts.Algorithm, f'algorithm {name!r}')


@dataclasses.dataclass(frozen=True)
class Program:
    """A command a user runs: the algorithms and datasets it offers (the first of each its default).
    None: every registered one that fits the other side."""
    file: str
    description: str
    algorithms: tuple = None
    datasets: tuple = None

    def offers(self):
        """(algorithm names, dataset names) it offers: those listed, or every registered one that fits
        one of the other side's."""
        algorithms = {name: algorithm(name) for name in self.algorithms or ALGORITHMS}
        datasets = {name: dataset(name) for name in self.datasets or DATASETS}
        pairs = [(a, d) for a, a_class in algorithms.items() for d, d_class in datasets.items() if a_class.fits(d_class)]
        return (tuple(a for a in algorithms if any(p[0] == a for p in pairs)),
                tuple(d for d in datasets if any(p[1] == d for p in pairs)))


PROGRAMS = (  # the first that offers an (algorithm, dataset) pair is named in messages as its command
    Program('run_metabolism.py', 'Train or test ProtoNet, MAML, Reptile or the baseline on the TDC metabolism '
            'assays.', datasets=('metabolism',)),
    Program('protonet.py', 'Train or test a ProtoNet on Omniglot or the metabolism assays.', algorithms=('protonet',)),
    Program('maml.py', 'Train or test MAML (or Reptile) on Omniglot, sinusoids or the metabolism assays.',
            algorithms=('maml', 'reptile')),
    Program('python -m fewshot', 'Train or test any registered algorithm on any registered dataset it fits.'),
)


def program(file):
    return next(p for p in PROGRAMS if p.file == file)


def command_for(algorithm_name, dataset_name):
    """The command that trains and tests this algorithm on this dataset ('maml.py --dataset sinusoid')."""
    for candidate in PROGRAMS:
        algorithms, datasets = candidate.offers()
        if algorithm_name in algorithms and dataset_name in datasets:
            return candidate.file + ('' if algorithm_name == algorithms[0] else f' --algorithm {algorithm_name}') + \
                ('' if dataset_name == datasets[0] else f' --dataset {dataset_name}')
    return f'a program that offers --algorithm {algorithm_name} on --dataset {dataset_name}'


def names_of_older(checkpoint):
    """(algorithm, dataset) of a checkpoint written before --algorithm and --dataset existed: the
    first registered ones whose recognizes_older(checkpoint) holds."""
    algorithm_name = next((n for n in ALGORITHMS if algorithm(n).recognizes_older(checkpoint)), None)
    dataset_name = next((n for n in DATASETS if dataset(n).recognizes_older(checkpoint)), None)
    return algorithm_name, dataset_name
