"""What a task is, for every dataset and algorithm: a batch of tasks as tensors,
the generic sampler over a (classes, examples, ...) array, the checks on a
task's shape, and the two kinds of task
(classification, regression) with their loss and per-task metric.

Datasets import this module; it imports no dataset.
"""
import dataclasses

import torch
import torch.nn.functional as F

from fewshot import contracts
from fewshot.errors import UserError


@dataclasses.dataclass
class TaskBatch:
    """B tasks with K support and Q query examples per class (regression: M points).

    images_support: (B, N*K, *example_shape) float32, class-major (N blocks of K)
    labels_support: (B, N*K) int64 in 0..N-1 (regression: (B, K, outputs) float targets)
    images_query:   (B, N*Q, *example_shape) float32
    labels_query:   (B, N*Q) int64 (regression: (B, Q, outputs))
    groups:         (B,) int64, the group of each task (metabolism: its assay, an index
                    into the sampler's group_names), or None
    classes:        (B, N) int64, the sampler's class of each task label (metabolism:
                    assay * 2 + assay label, below the sampler's num_classes), or None
    Iterating yields one (images_support, labels_support, images_query,
    labels_query) tuple per task, as course-style code expects.
    """
    images_support: torch.Tensor
    labels_support: torch.Tensor
    images_query: torch.Tensor
    labels_query: torch.Tensor
    groups: torch.Tensor = None
    classes: torch.Tensor = None

    def __len__(self):
        return self.labels_support.shape[0]

    def __iter__(self):
        return iter(zip(self.images_support, self.labels_support, self.images_query, self.labels_query))

    def _map(self, function):
        return TaskBatch(**{name: None if t is None else function(t) for name, t in vars(self).items()})

    def to(self, device):
        return self._map(lambda t: t.to(device))

    def select(self, index):
        """The tasks picked by a slice or index tensor along B."""
        return self._map(lambda t: t[index])


@dataclasses.dataclass(frozen=True)
class TaskKind:
    """How a dataset's tasks are scored.

    loss(outputs, targets): mean over all leading dims, (..., M, C) outputs -> scalar.
    metric(outputs, targets): per task, (..., M, C) -> (...), detached.
    metric_kind: the word in TensorBoard tags and the test line: 'accuracy' (the best
        checkpoint has the highest) or 'loss' (the lowest).
    """
    name: str
    loss: object
    metric: object
    metric_kind: str


def task_accuracy(logits, labels):
    """(..., M, N) logits, (..., M) labels -> (...) fraction correct per task."""
    return (logits.argmax(-1) == labels).float().mean(-1)


def _cross_entropy(logits, labels):
    return F.cross_entropy(logits.flatten(0, -2), labels.flatten())


def _task_mse(outputs, targets):
    return (outputs.detach() - targets).square().flatten(-2).mean(-1)


CLASSIFICATION = TaskKind('classification', _cross_entropy, lambda o, y: task_accuracy(o.detach(), y),
                          'accuracy')
REGRESSION = TaskKind('regression', F.mse_loss, _task_mse, 'loss')


def check_task_shape(num_way, num_support, num_query, num_classes, num_examples, where):
    """Raise a UserError naming the flag when a task cannot be drawn."""
    if min(num_way, num_support, num_query) < 1:
        raise UserError('--num_way, --num_support and --num_query must be at least 1')
    if num_support + num_query > num_examples:
        raise UserError(f'--num_support {num_support} + --num_query {num_query} = {num_support + num_query} '
                        f'exceeds the {num_examples} examples per class in {where}; lower them')
    if num_way > num_classes:
        raise UserError(f'--num_way {num_way} exceeds the {num_classes} classes of {where}; lower it')


def task_batch_from_draws(picked, num_support):
    """(B, N, K+Q, ...) examples, class n of each task labelled n -> a float TaskBatch
    with the first K of each class as support and the rest as query."""
    batch_size, n, k = picked.shape[0], picked.shape[1], num_support
    q = picked.shape[2] - k
    if not picked.is_floating_point():
        picked = picked.float()
    shape = picked.shape[3:]
    labels = torch.arange(n, device=picked.device)
    return TaskBatch(
        picked[:, :, :k].reshape(batch_size, n * k, *shape),
        labels.repeat_interleave(k).expand(batch_size, -1).contiguous(),
        picked[:, :, k:].reshape(batch_size, n * q, *shape),
        labels.repeat_interleave(q).expand(batch_size, -1).contiguous())


class TaskSampler(contracts.Sampler):
    """Draws batches of tasks from a (C, D, ...) tensor of C classes with D examples each.

    Classes are taken in random order and labelled 0..N-1; support and query
    are disjoint draws without replacement from a class's D examples. All
    randomness comes from one CPU generator, so a seed gives the same tasks on
    any device and its state can be checkpointed.

    class_groups: (C,) int64 group of each class (Omniglot: its alphabet), or None.
        Given, every task draws its N classes from one group, picked uniformly
        among the groups with at least N classes.
    transform: f(examples (B, N, K+Q, ...) float, generator) -> like it (augmentation), or None.
    """

    def __init__(self, examples, num_way, num_support, num_query, seed=0, device='cpu', where='the split',
                 class_groups=None, transform=None):
        sizes = None if class_groups is None else torch.bincount(class_groups)  # classes per group
        largest = examples.shape[0] if sizes is None else int(sizes.max())
        check_task_shape(num_way, num_support, num_query, largest, examples.shape[1],
                         where if class_groups is None else f'the largest group (alphabet) of {where}')
        self.examples = examples.to(device)
        self.num_way, self.num_support, self.num_query = num_way, num_support, num_query
        self.generator = torch.Generator().manual_seed(seed)
        self.transform = transform
        self.class_groups = class_groups
        self.description = f'{where}: {examples.shape[0]} classes'
        if class_groups is not None:
            self.eligible_groups = torch.nonzero(sizes >= num_way).flatten()  # (G,)

    def draw_classes(self, batch_size):
        """(B, N) classes of each task, in random order."""
        num_classes = self.examples.shape[0]
        scores = torch.rand(batch_size, num_classes, generator=self.generator)
        if self.class_groups is not None:  # classes outside the task's group sort last
            pick = torch.randint(len(self.eligible_groups), (batch_size,), generator=self.generator)
            outside = self.class_groups.unsqueeze(0) != self.eligible_groups[pick].unsqueeze(1)  # (B, C)
            scores = scores + outside
        return scores.argsort(dim=1)[:, :self.num_way]

    def sample(self, batch_size):
        """A TaskBatch of batch_size tasks on the sampler's device."""
        num_examples = self.examples.shape[1]
        n, k, q = self.num_way, self.num_support, self.num_query
        classes = self.draw_classes(batch_size)
        draws = torch.rand(batch_size, n, num_examples, generator=self.generator).argsort(dim=2)[..., :k + q]
        device = self.examples.device
        picked = self.examples[classes.unsqueeze(-1).to(device), draws.to(device)]  # (B, N, K+Q, ...)
        if self.transform is not None:
            picked = self.transform(picked.float(), self.generator)
        return task_batch_from_draws(picked, k)
