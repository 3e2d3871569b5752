"""Prototypical Networks (Snell et al., 2017) for few-shot classification.

    python protonet.py --num_support 5                      # train 5-way 5-shot on Omniglot
    python protonet.py --test --log_dir D --checkpoint_step S --num_support 1
"""
import argparse

import torch
import torch.nn.functional as F

import networks
import omniglot
import training
import util


class FunctionalNet(torch.nn.Module):
    """A functional network fn(params, x, num_tasks) holding its params as an nn.Module."""

    def __init__(self, function, params):
        super().__init__()
        self.function = function
        self.params = torch.nn.ParameterDict({k: torch.nn.Parameter(v) for k, v in params.items()})

    def forward(self, x, num_tasks=1):
        return self.function(dict(self.params), x, num_tasks)


def omniglot_encoder(hidden_channels=64):
    """4 x [conv3x3 -> BN -> ReLU -> maxpool2]: (T*M, 1, 28, 28) -> (T*M, 64)."""
    return FunctionalNet(networks.conv_features, networks.init_conv_params(4, 1, hidden_channels))


def prototype_logits(support, labels_support, query, num_way):
    """Negative squared Euclidean distances to the class prototypes.

    Args:
        support: (B, N*K, D) support embeddings; labels_support: (B, N*K).
        query: (B, M, D) embeddings to classify.
    Returns:
        (B, M, N) logits.
    """
    one_hot = F.one_hot(labels_support, num_way).to(support.dtype)  # (B, N*K, N)
    prototypes = one_hot.transpose(1, 2) @ support / one_hot.sum(1).unsqueeze(-1)  # (B, N, D)
    return -(query.unsqueeze(2) - prototypes.unsqueeze(1)).square().sum(-1)


class ProtoNet:
    """A ProtoNet learner: an encoder, its Adam optimizer, and the ProtoNet loss."""

    key_metric = 'query'
    metric_kind = 'accuracy'

    def __init__(self, network, learning_rate, device='cpu', tasks_per_call=None, joint_batch_norm=False):
        """network: maps (T*M, ...) examples of T tasks (num_tasks=T) to (T*M, D) embeddings.
        tasks_per_call: tasks per encoder call (default: measured best for the device).
        joint_batch_norm: a task's support and query examples share batch-norm statistics.
            By default each set has its own, as in the course, whose step encodes
            support and query in two calls."""
        self.device = torch.device(device)
        self._network = network.to(self.device)
        self.optimizer = torch.optim.Adam(self._network.parameters(), lr=learning_rate)
        self.tasks_per_call = tasks_per_call
        self.joint_batch_norm = joint_batch_norm

    def _embed(self, examples):
        """(B, M, ...) examples of B tasks -> (B, M, D) embeddings, batch-norm statistics per task."""
        per_call = self.tasks_per_call or networks.default_tasks_per_call(self.device, len(examples))
        return networks.per_task_calls(self._network, examples, per_call)

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
            'support': util.task_accuracy(support_logits, task_batch.labels_support),
            'query': util.task_accuracy(query_logits, task_batch.labels_query)}
        return loss, accuracy

    def _step(self, task_batch):
        """The course's step: (loss, support accuracy, query accuracy), means over tasks."""
        loss, accuracy = self._task_metrics(task_batch)
        return loss, accuracy['support'].mean().item(), accuracy['query'].mean().item()

    def train_step(self, task_batch, step):
        self._network.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss, accuracy = self._task_metrics(task_batch)
        loss.backward()
        self.optimizer.step()
        return {'loss': loss.item(), **{k: v.mean().item() for k, v in accuracy.items()}}

    @torch.no_grad()
    def evaluate(self, task_batch):
        loss, accuracy = self._task_metrics(task_batch)
        return {'loss': loss.expand(len(task_batch)), **accuracy}

    def extra_scalars(self):
        return {}

    def state(self):
        return {'network': self._network.state_dict(), 'optimizer': self.optimizer.state_dict()}

    def load_state(self, state):
        self._network.load_state_dict(state['network'])
        self.optimizer.load_state_dict(state['optimizer'])


def default_log_dir(args):
    return (f'./logs/protonet/omniglot.way_{args.num_way}.support_{args.num_support}.query_{args.num_query}'
            f'.lr_{args.learning_rate}.batch_size_{args.batch_size}' + ('.joint_bn' if args.joint_batch_norm else ''))


def build_learner(args, device):
    return ProtoNet(omniglot_encoder(), args.learning_rate, device, joint_batch_norm=args.joint_batch_norm)


def add_batch_norm_arg(parser):
    """ProtoNet's --joint_batch_norm (shared with run_metabolism.py)."""
    parser.add_argument('--joint_batch_norm', default=False, action='store_true',
                        help="normalise a task's support and query images together "
                             '(default: separately, as the course does)')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train or test a ProtoNet on Omniglot.')
    training.add_common_args(parser, num_train_iterations=5000)
    parser.add_argument('--learning_rate', type=float, default=0.001, help='Adam learning rate')
    add_batch_norm_arg(parser)
    omniglot.add_args(parser)
    return training.parse_checked(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    if args.learning_rate <= 0:
        raise util.UserError('--learning_rate must be positive')
    return training.run(args, args.log_dir or default_log_dir(args), build_learner, omniglot.build_sampler)


if __name__ == '__main__':
    util.run_cli(main)
