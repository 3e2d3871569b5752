"""Prototypical Networks (Snell et al., 2017) for few-shot classification.

    python protonet.py --num_support 5                      # train 5-way 5-shot on Omniglot
    python protonet.py --dataset metabolism                 # 2-way 5-shot TDC metabolism tasks
    python protonet.py --test --log_dir D --checkpoint_step S --num_support 1
"""
import torch
import torch.nn.functional as F

import cli
import networks
import tasks
import tuning
import util


def prototype_logits(support, labels_support, query, num_way):
    """Negative squared Euclidean distances to the class prototypes.

    Args:
        support: (B, N*K, D) support embeddings; labels_support: (B, N*K).
        query: (B, M, D) embeddings to classify.
    Returns:
        (B, M, N) logits, at least float32: under --precision bf16 too, whose 8-bit
        mantissa would round the small differences between squared distances away.
    """
    with torch.autocast(support.device.type, enabled=False):
        dtype = torch.promote_types(support.dtype, torch.float32)
        support, query = support.to(dtype), query.to(dtype)
        one_hot = F.one_hot(labels_support, num_way).to(support.dtype)  # (B, N*K, N)
        prototypes = one_hot.transpose(1, 2) @ support / one_hot.sum(1).unsqueeze(-1)  # (B, N, D)
        return -(query.unsqueeze(2) - prototypes.unsqueeze(1)).square().sum(-1)


class ProtoNet:
    """A ProtoNet learner: an encoder and the ProtoNet loss."""

    key_metric = 'query'
    num_outputs = None  # no classifier head: any N-way
    tasks_per_backward = 0  # one backward per meta-batch
    task = tasks.CLASSIFICATION
    optimizer = 'adam'
    lr_schedule, lr_tag = 'constant', None

    def __init__(self, network, device='cpu', tasks_per_call=None, joint_batch_norm=False, channels_last=False):
        """network: maps (T*M, ...) examples of T tasks (num_tasks=T) to (T*M, D) embeddings.
        tasks_per_call: tasks per encoder call; None: the device's default, and the learner
            offers both ways to tuning.choose (execution_options).
        joint_batch_norm: a task's support and query examples share batch-norm statistics.
            By default each set has its own, as in the course, whose step encodes
            support and query in two calls.
        channels_last: give a conv encoder its (C, H, W) images channels-last (networks.channels_last);
            None: the device's default, and both layouts are offered to tuning.choose."""
        self.device = torch.device(device)
        self._network = network.to(self.device)
        self.tasks_per_call = tasks_per_call
        self.tunable = tasks_per_call is None
        self.joint_batch_norm = joint_batch_norm
        self.layout_tunable = channels_last is None
        self.channels_last = networks.default_channels_last(self.device) if channels_last is None else channels_last

    execution_flags = '--encoder_calls, --channels_last'

    def execution_options(self):
        """{name: switch to it}: the ways to encode a meta-batch, per-task or batched calls with
        contiguous or channels-last images, those not forced (the same numbers to round-off)."""
        calls = {'per-task encoder calls': lambda: setattr(self, 'tasks_per_call', 1),
                 'one batched encoder call': lambda: setattr(self, 'tasks_per_call', networks.ALL_TASKS)}
        return tuning.combine(calls if self.tunable else {},
                              networks.layout_options(self) if self.layout_tunable else {})

    def parameters(self):
        return list(self._network.parameters())

    def _embed(self, examples):
        """(B, M, ...) examples of B tasks -> (B, M, D) embeddings, batch-norm statistics per task."""
        per_call = self.tasks_per_call or networks.default_tasks_per_call(self.device, len(examples))
        return networks.per_task_calls(self._network, examples, per_call, self.channels_last)

    def _logits(self, task_batch):
        """(B, N*K, N) support logits and (B, N*Q, N) query logits of a TaskBatch."""
        if self.joint_batch_norm:
            num_support = task_batch.labels_support.shape[1]
            embeddings = self._embed(torch.cat([task_batch.images_support, task_batch.images_query], dim=1))
            support, query = embeddings[:, :num_support], embeddings[:, num_support:]
        else:
            support, query = self._embed(task_batch.images_support), self._embed(task_batch.images_query)
        num_way = int(task_batch.labels_support.max()) + 1
        labels = task_batch.labels_support
        return prototype_logits(support, labels, support, num_way), prototype_logits(support, labels, query, num_way)

    def _task_metrics(self, task_batch):
        """Mean query NLL over all tasks, and (B,) per-task support and query accuracies."""
        support_logits, query_logits = self._logits(task_batch)
        loss = F.cross_entropy(query_logits.flatten(0, 1), task_batch.labels_query.flatten())
        accuracy = {
            'support': tasks.task_accuracy(support_logits, task_batch.labels_support),
            'query': tasks.task_accuracy(query_logits, task_batch.labels_query)}
        return loss, accuracy

    def _step(self, task_batch):
        """The course's step: (loss, support accuracy, query accuracy), means over tasks."""
        loss, accuracy = self._task_metrics(task_batch)
        return loss, accuracy['support'].mean().item(), accuracy['query'].mean().item()

    def loss(self, task_batch, step):
        """The training objective (scalar) and (B,) per-task support and query accuracies."""
        loss, accuracy = self._task_metrics(task_batch)
        return loss, {k: v.detach() for k, v in accuracy.items()}

    @torch.no_grad()
    def evaluate(self, task_batch):
        loss, accuracy = self._task_metrics(task_batch)
        return {'loss': loss.expand(len(task_batch)), **accuracy}

    def scalars(self):
        return {}

    def buffers(self):
        return []

    def state(self):
        return {'network': self._network.state_dict()}

    def load_state(self, state):
        self._network.load_state_dict(state['network'])


# ---------------------------------------------------------------- the algorithm interface

NAME = 'protonet'
DEFAULTS = {}  # the common flags' own defaults are the course's ProtoNet ones
TASK_KINDS = ('classification',)
TEST_TIME_FLAGS = ()


def add_args(parser):
    parser.add_argument('--encoder_calls', choices=['auto', 'per_task', 'batched'], default='auto',
                        help='encode a meta-batch task by task or in one call (same numbers); auto: the faster '
                             'on this machine, timed once at the start of training and cached')
    parser.add_argument('--joint_batch_norm', default=False, action='store_true',
                        help="normalise a task's support and query images together "
                             '(default: separately, as the course does)')


def check_args(args):
    pass


def build_learner(args, dataset, device):
    params, forward = dataset.network(args)
    encoder = networks.FunctionalNet(forward, params)
    calls = 'batched' if dataset.ONE_ENCODER_CALL_PER_BATCH else args.encoder_calls
    return ProtoNet(encoder, device, tasks_per_call={'auto': None, 'per_task': 1, 'batched': networks.ALL_TASKS}[calls],
                    joint_batch_norm=args.joint_batch_norm, channels_last=cli.channels_last(args, dataset))


def log_name(args, defaults):
    """The hyperparameters part of the default log dir (a class split other than the course's is named)."""
    return (f'way_{args.num_way}.support_{args.num_support}.query_{args.num_query}.lr_{args.learning_rate}'
            f'.batch_size_{args.batch_size}' + ('.joint_bn' if args.joint_batch_norm else '')
            + cli.changed_flags(args, defaults, cli.SHARED_LOG_NAME_FLAGS))


SCRIPT = cli.Script(description='Train or test a ProtoNet on Omniglot or the metabolism assays.',
                    algorithms=('protonet',), datasets=('omniglot', 'metabolism'))


def main(argv=None):
    return cli.main(SCRIPT, argv)


if __name__ == '__main__':
    util.run_cli(main)
