"""The four contracts, written once: a Dataset, an Algorithm, the Learner an algorithm
builds and the Sampler a dataset builds. Subclass them; members with a default are optional.
`check` tells, in one line, what a class lacks.

    source files -> Dataset.build_sampler -> Sampler.sample(B) -> TaskBatch
                 -> Learner.loss / evaluate (built by Algorithm.build_learner) -> the engine's loop
"""
import contextlib

from fewshot.errors import UserError


def required(method):
    """Marks a member every implementation defines (contracts.check names it when missing)."""
    method.required = True
    return method


class Sampler:
    """Draws batches of tasks; all its randomness comes from `generator` (a CPU torch.Generator),
    which checkpoints save, so a resumed run draws the same tasks."""

    generator = None           # torch.Generator: set in __init__
    group_names = ()           # names of the task groups a TaskBatch's `groups` index (metabolism: assays)
    meta_batch_ci = False      # --test also prints the course's CI over meta-batch means
    description = ''           # what its tasks are drawn from, for the test line ('the Omniglot test split ...')

    @required
    def sample(self, batch_size):
        """A tasks.TaskBatch of batch_size tasks on the sampler's device."""


class Learner:
    """What an algorithm trains. The engine owns zero_grad, backward, the learning-rate
    schedule, the gradient all-reduce and the optimizer step."""

    key_metric = None          # the validation metric that picks the best checkpoint ('query', ...)
    task = None                # tasks.CLASSIFICATION or tasks.REGRESSION
    optimizer = 'adam'         # 'adam' or 'sgd'
    lr_schedule = 'constant'   # 'constant', 'cosine' or 'linear' (to 0 over the run)
    lr_tag = None              # the TensorBoard tag that logs the learning rate, or None
    num_outputs = None         # the classes of a classifier head; None: any N-way
    tasks_per_backward = 0     # tasks per backward pass (0: the whole meta-batch)
    notice = None              # a line the program prints when it starts (how the learner computes its steps)

    @required
    def parameters(self):
        """The tensors the optimizer trains."""

    @required
    def loss(self, task_batch, step):
        """(scalar objective to call backward() on, {name: (B,) per-task metric})."""

    @required
    def evaluate(self, task_batch):
        """{name: (B,) per-task metric}, 'loss' among them, changing nothing."""

    @required
    def state(self):
        """The tensors a checkpoint keeps."""

    @required
    def load_state(self, state):
        """Load what state() returned."""

    def scalars(self):
        """Extra TensorBoard scalars {tag: float} (learned inner learning rates)."""
        return {}

    @contextlib.contextmanager
    def queries_alone(self):
        """Inside, evaluate() classifies each query on its own from its task's support set
        (yields True), or cannot (yields False: its queries share batch statistics)."""
        yield False

    def buffers(self):
        """Tensors not trained but averaged over the processes after each step (running statistics)."""
        return []

    def execution_options(self, sample=None):
        """{name: switch to it} of the ways to compute the same numbers, timed at the start of
        training (engine/tuning.py) on sample (a TaskBatch of the run's tasks; None: none at hand);
        {} when there is one way, or a flag forced one."""
        return {}


class Dataset:
    """A kind of tasks: its flags, its samplers and the network its examples need."""

    name = None                # its --dataset name
    task = None                # tasks.CLASSIFICATION or tasks.REGRESSION
    defaults = {}              # flag defaults for this dataset, over the common ones and the algorithm's
    flags = ()                 # its flags.Flag declarations (--data_dir and the common ones are every run's)
    images = False             # examples are (C, H, W) images for a conv net: --channels_last applies, and
                               # the ways to call an encoder over a meta-batch are timed
    num_train_classes = None   # the classes its training sampler names in TaskBatch.classes (or None)
    distort = None             # f(examples (..., *example_shape) float, generator) -> randomly distorted copies
                               # of the same shape (the training augmentation; test-time augmentation uses it)

    def check_args(self, args):
        """Check its flags together after parsing; raise a UserError naming the flag."""

    @required
    def build_sampler(self, split, args, seed, device):
        """The Sampler of 'train', 'val' or 'test' for the run's flags."""

    @required
    def network(self, args, num_outputs=None):
        """(params, forward): a dict of tensors and forward(params, x, num_tasks=1, fused_bn=True,
        norm=None) -> (T*M, D) features, or (T*M, num_outputs) logits through a linear head."""

    def log_dir(self, algorithm_name, hyperparameters):
        """The default log dir of a run of an algorithm on it."""
        return f'./logs/{algorithm_name}/{self.name}.{hyperparameters}'

    def benchmark_test(self, learner, args, log_dir, processes):
        """At --test, a fixed benchmark's results in place of sampled tasks, or None (the sampled tasks)."""
        return None

    def after_test(self, learner, args, log_dir):
        """Run after --test (rank 0): e.g. draw a figure."""

    def recognizes_older(self, checkpoint):
        """Whether a checkpoint written before --dataset existed (its args name none) is of this dataset."""
        return False


class Algorithm:
    """A meta-learning algorithm: its flags and the learner it builds for a dataset."""

    name = None                # its --algorithm name
    task_kinds = ('classification',)  # the task kinds it learns
    defaults = {}              # flag defaults, under the dataset's
    own_defaults = {}          # flag defaults over the dataset's: flags whose meaning is the algorithm's own
                               # (Reptile's --learning_rate is a meta step size, not an Adam rate)
    flags = ()                 # its flags.Flag declarations
    needs_train_classes = False  # its learner classifies the training classes (Dataset.num_train_classes)

    def fits(self, dataset):
        """Whether it can learn the dataset's tasks."""
        return dataset.task.name in self.task_kinds and (
            not self.needs_train_classes or dataset.num_train_classes is not None)

    def check_args(self, args):
        """Check its flags together after parsing; raise a UserError naming the flag."""

    def recognizes_older(self, checkpoint):
        """Whether a checkpoint written before --algorithm existed (its args name none) is of this algorithm."""
        return False

    @required
    def build_learner(self, args, dataset, device, learner_class=None):
        """The Learner, built with dataset.network and dataset.task; learner_class: the program's
        subclass of the algorithm's learner (the course's, with its methods written out), or None."""

    @required
    def log_name(self, args, changed):
        """The hyperparameters part of the default log dir ('way_5.support_1...'); changed:
        '.dest_value' of the log_name flags off their defaults, to be included."""


REQUIRED_ATTRIBUTES = {Dataset: ('name', 'task'), Algorithm: ('name',), Learner: ('key_metric', 'task'),
                       Sampler: ('generator',)}


def missing_members(obj, contract):
    """The members obj (a class, or an instance) lacks to fulfil the contract: required methods
    it does not define, required attributes left None."""
    cls = obj if isinstance(obj, type) else type(obj)
    missing = [name for name, member in vars(contract).items()
               if getattr(member, 'required', False) and getattr(cls, name) is member]
    return missing + [name for name in REQUIRED_ATTRIBUTES.get(contract, ()) if getattr(obj, name, None) is None]


def check(obj, contract, what):
    """Raise a UserError naming what obj (a class, or an instance) lacks to fulfil the contract;
    else return obj."""
    cls = obj if isinstance(obj, type) else type(obj)
    if not issubclass(cls, contract):
        raise UserError(f'{what} {cls.__module__}.{cls.__name__} is not a fewshot.contracts.{contract.__name__}: '
                        'subclass it')
    missing = missing_members(obj, contract)
    if missing:
        raise UserError(f'{what} {cls.__module__}.{cls.__name__} does not fulfil the {contract.__name__} contract '
                        f'(fewshot/contracts.py): define {", ".join(missing)}')
    return obj
