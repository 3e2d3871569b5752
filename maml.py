"""Model-Agnostic Meta-Learning (Finn et al., 2017) and its family, for few-shot
classification (Omniglot, metabolism) and regression (sinusoids):

- second-order MAML, first-order (--first_order), multi-step inner loops;
- learned inner learning rates per parameter tensor (--learn_inner_lrs,
  Meta-SGD per tensor) or per tensor and step (--learn_inner_lrs_per_step, LSLR);
- an Adagrad inner optimizer (--inner_optimizer adagrad);
- MAML++ training tricks (Antoniou et al., 2019): derivative-order annealing,
  multi-step loss, cosine outer learning rate, per-step batch norm;
- ANIL (--anil: only the head adapts in the inner loop);
- Reptile (Nichol et al., 2018; --algorithm reptile, in reptile.py).

    python maml.py --inner_lr 0.4                    # 5-way 1-shot on Omniglot
    python maml.py --dataset sinusoid                # Finn et al.'s sinusoid regression
    python maml.py --dataset metabolism              # 2-way 5-shot TDC metabolism tasks
    python maml.py --test --log_dir D --checkpoint_step S
"""
import torch

import cli
import networks
import tasks
import tuning
import util
from inner_loop import InnerLoop, Variants


class MAML:
    """A MAML learner: the inner loop, the outer loss, and what the training loop needs."""

    key_metric = 'post_adapt_query'
    optimizer = 'adam'

    def __init__(self, params, forward, task=tasks.CLASSIFICATION, num_inner_steps=1, inner_lr=0.4,
                 learn_inner_lrs=False, first_order=False, device='cpu', vmap_tasks=None, variants=None,
                 channels_last=False):
        """params, forward: the network with its head, forward(params, x, fused_bn=..., norm=...) -> (M, outputs).
        task: tasks.CLASSIFICATION or tasks.REGRESSION (the loss and the per-task metric)."""
        self.inner = InnerLoop(params, forward, task, num_inner_steps, inner_lr, learn_inner_lrs, device,
                               vmap_tasks, variants, channels_last)
        self.device, self.task, self.variants = self.inner.device, task, self.inner.variants
        self.first_order = first_order
        self.num_outputs = params['head'].shape[0] if 'head' in params else None
        self.lr_schedule = 'cosine' if self.variants.cosine_outer_lr else 'constant'
        self.lr_tag = 'outer_lr' if self.variants.cosine_outer_lr else None

    def parameters(self):
        """The tensors the outer optimizer trains: meta-parameters, then learned inner LRs."""
        trained = list(self.inner.meta_parameters.values())
        return trained + list(self.inner.inner_lrs.values()) if self.inner.learn_inner_lrs else trained

    def _second_order_at(self, step):
        """Whether the meta-gradient at outer step `step` is second-order."""
        return not self.first_order and step >= self.variants.anneal_derivative_order

    def _multi_step_weights(self, step):
        """MSL weights of the query losses after inner steps 1..L at outer step `step`:
        uniform at first, annealed linearly over the first 10% of the run so that
        each non-final step keeps 0.03 / L and the last step the rest."""
        num_steps = self.inner.num_inner_steps
        progress = min(step / max(1, self.variants.num_train_iterations // 10), 1.0)
        weights = torch.full((num_steps,), (1 - progress) / num_steps + progress * 0.03 / num_steps)
        weights[-1] = 1 - weights[:-1].sum()
        return weights

    def _inner_loop(self, images, labels, train):
        """The course's inner loop: adapt the meta-parameters to one task's support set.

        Args:
            images: (N*K, 1, 28, 28) support images; labels: (N*K,).
            train: build the graph for the meta-gradient (second-order unless
                first_order); with False nothing returned requires grad.
        Returns:
            parameters: dict of adapted parameters.
            accuracies: support accuracy (MSE for regression) before each step and after the last (L+1 floats).
            gradients: the L dicts of inner-loop gradients.
        """
        history, metrics, gradients = self.inner.adapt(images, labels, train and not self.first_order, train)
        return history[-1], [m.item() for m in metrics], gradients

    def _task_metrics(self, task_batch, train, second_order=None, loss_weights=None):
        """The outer loss and (B,) per-task metrics.

        second_order: None follows first_order. loss_weights: (L,) weights of the
        query losses after inner steps 1..L (MSL); None: the last step only (eq. 9).
        """
        inner = self.inner
        if self.task is tasks.CLASSIFICATION and task_batch.labels_support.max() >= self.num_outputs:
            raise util.UserError(f'tasks have more classes than the {self.num_outputs}-way head this MAML was '
                                 f'trained with; use --num_way {self.num_outputs}')
        create_graph = train and (not self.first_order if second_order is None else second_order)
        images_query, labels_query = task_batch.images_query, task_batch.labels_query
        if inner.vmap_tasks:
            history, support = inner.adapt_vmapped(task_batch.images_support, task_batch.labels_support,
                                                   create_graph, train)

            def query_outputs(step):
                return torch.vmap(inner.forward, randomness='different')(images_query, history[step])
        else:
            adapted = [inner.adapt(x, y, create_graph, train)
                       for x, y in zip(task_batch.images_support, task_batch.labels_support)]
            support = torch.stack([torch.stack(metrics) for _, metrics, _ in adapted])

            def query_outputs(step):
                return torch.stack([inner.forward(x, history[step], step, train)
                                    for x, (history, _, _) in zip(images_query, adapted)])
        last = inner.num_inner_steps
        with torch.set_grad_enabled(train):
            final = query_outputs(last)
            loss = self.task.loss(final, labels_query)
            if loss_weights is not None and last > 1:
                loss = loss_weights[-1] * loss + sum(
                    weight * self.task.loss(query_outputs(step), labels_query)
                    for step, weight in enumerate(loss_weights[:-1].tolist(), start=1))
        metrics = {'pre_adapt_support': support[:, 0], 'post_adapt_support': support[:, -1],
                   'post_adapt_query': self.task.metric(final, labels_query)}
        if self.task is tasks.REGRESSION:
            with torch.no_grad():
                metrics['pre_adapt_query'] = self.task.metric(query_outputs(0), labels_query)
        return loss, metrics

    def _outer_step(self, task_batch, train):
        """The course's outer step: (mean query loss, pre-adapt support accuracy,
        post-adapt support accuracy, post-adapt query accuracy), means over tasks."""
        loss, accuracy = self._task_metrics(task_batch, train)
        return (loss, accuracy['pre_adapt_support'].mean().item(), accuracy['post_adapt_support'].mean().item(),
                accuracy['post_adapt_query'].mean().item())

    def loss(self, task_batch, step):
        """The training objective at outer step `step` (scalar) and (B,) per-task metrics."""
        weights = self._multi_step_weights(step) if self.variants.multi_step_loss else None
        return self._task_metrics(task_batch, train=True, second_order=self._second_order_at(step),
                                  loss_weights=weights)

    execution_flags = '--vmap_tasks, --channels_last'

    @property
    def tasks_per_backward(self):
        """A backward per task for the per-task loop (one task's graph held at a time, as fast on a
        CPU: bench.py), one per meta-batch with vmap."""
        return 0 if self.inner.vmap_tasks else 1

    def execution_options(self):
        """{name: switch to it}: a per-task loop or vmap over tasks, contiguous or channels-last
        images (the same numbers to round-off)."""
        loops = {'per-task inner loops': lambda: setattr(self.inner, 'vmap_tasks', False),
                 'vmap over tasks': lambda: setattr(self.inner, 'vmap_tasks', True)}
        return tuning.combine(loops if self.inner.tunable else {},
                              networks.layout_options(self.inner) if self.inner.layout_tunable else {})

    def evaluate(self, task_batch):
        """(B,) per-task metrics after adapting to each support set, and the query loss."""
        loss, metrics = self._task_metrics(task_batch, train=False)
        return {'loss': loss.detach().expand(len(task_batch)), **metrics}

    def scalars(self):
        """TensorBoard scalars beyond the metrics: the learned inner LRs."""
        scalars = {}
        if self.inner.learn_inner_lrs:
            for k, v in self.inner.inner_lrs.items():
                scalars.update({f'inner_lr/{k}' + (f'/step{s}' if v.dim() else ''): x
                                for s, x in enumerate(v.detach().reshape(-1).tolist())})
        return scalars

    def buffers(self):
        """Tensors the loop averages over processes after each step: per-step batch-norm running statistics."""
        bn = self.inner.per_step_bn
        return [] if bn is None else [t for row in bn.running for pair in row for t in pair]

    def state(self):
        return self.inner.state()

    def load_state(self, state):
        self.inner.load_state(state)


# ---------------------------------------------------------------- the algorithm interface

NAME = 'maml'
DEFAULTS = dict(num_train_iterations=15000)  # overrides of the flags' own defaults
TASK_KINDS = ('classification', 'regression')
TEST_TIME_FLAGS = ('num_inner_steps', 'vmap_tasks')  # given at --test, they replace the trained values
LOG_NAME_FLAGS = ('first_order', 'num_hidden_channels', 'inner_optimizer', 'learn_inner_lrs_per_step', 'anil',
                  'anneal_derivative_order', 'multi_step_loss', 'cosine_outer_lr', 'per_step_bn',
                  *cli.SHARED_LOG_NAME_FLAGS)  # named in the default log dir when not at their defaults


def add_args(parser):
    """The inner-loop flags and the variants' flags (MAML and Reptile)."""
    parser.add_argument('--num_inner_steps', type=util.positive_int, default=None,
                        help='inner-loop steps (default 1; at --test: as trained)')
    parser.add_argument('--inner_lr', type=util.positive_float, default=0.4, help='inner-loop learning rate (initial if learned)')
    parser.add_argument('--learn_inner_lrs', default=False, action='store_true',
                        help='learn one inner learning rate per parameter tensor')
    parser.add_argument('--first_order', default=False, action='store_true', help='first-order MAML (FOMAML)')
    parser.add_argument('--vmap_tasks', choices=['auto', 'yes', 'no'], default='auto',
                        help='adapt the tasks of a meta-batch with torch.vmap (same numbers); auto: the faster on '
                             'this machine, timed once at the start of training and cached (at --test and under '
                             'torchrun: no on a CPU, yes on a GPU)')
    parser.add_argument('--inner_optimizer', choices=['sgd', 'adagrad'], default=Variants.inner_optimizer)
    parser.add_argument('--inner_adagrad_eps', type=util.positive_float, default=Variants.inner_adagrad_eps,
                        help='Adagrad inner eps (the NTU report: 0.7)')
    parser.add_argument('--learn_inner_lrs_per_step', default=Variants.learn_inner_lrs_per_step, action='store_true',
                        help='LSLR: learn an inner LR per parameter tensor and inner step')
    parser.add_argument('--anil', default=Variants.anil, action='store_true',
                        help='adapt only the head in the inner loop')
    parser.add_argument('--anneal_derivative_order', type=util.non_negative_int, default=Variants.anneal_derivative_order, metavar='N',
                        help='first-order for the first N outer steps, second-order after')
    parser.add_argument('--multi_step_loss', default=Variants.multi_step_loss, action='store_true',
                        help='MSL: query losses after every inner step, annealed towards the last')
    parser.add_argument('--cosine_outer_lr', default=Variants.cosine_outer_lr, action='store_true',
                        help='cosine annealing of the outer LR over the run')
    parser.add_argument('--per_step_bn', default=Variants.per_step_bn, action='store_true',
                        help='per-step BN weights, biases and running statistics (used at evaluation)')


def check_args(args):
    """To train, an unset --num_inner_steps is 1 (at --test: as trained); the flags' types check their values."""
    if not args.test and args.num_inner_steps is None:
        args.num_inner_steps = 1


def inner_loop_options(args, dataset, device):
    """The keyword arguments of MAML and Reptile for the run's flags and dataset."""
    params, forward = dataset.network(args, num_outputs=args.num_way)
    return dict(params=params, forward=forward, task=dataset.TASK, num_inner_steps=args.num_inner_steps,
                inner_lr=args.inner_lr, learn_inner_lrs=args.learn_inner_lrs, device=device,
                vmap_tasks={'auto': None, 'yes': True, 'no': False}[args.vmap_tasks],
                variants=Variants.from_args(args), channels_last=cli.channels_last(args, dataset))


def build_learner(args, dataset, device):
    return MAML(first_order=args.first_order, **inner_loop_options(args, dataset, device))


def log_name(args, defaults):
    """The hyperparameters part of the default log dir."""
    name = (f'way_{args.num_way}.support_{args.num_support}.query_{args.num_query}'
            f'.inner_steps_{args.num_inner_steps or 1}.inner_lr_{args.inner_lr}.learn_inner_lrs_{args.learn_inner_lrs}'
            f'.outer_lr_{args.learning_rate}.batch_size_{args.batch_size}')
    name += cli.changed_flags(args, defaults, LOG_NAME_FLAGS)
    if args.inner_optimizer == 'adagrad':
        name += f'.eps_{args.inner_adagrad_eps}'
    return name


SCRIPT = cli.Script(description='Train or test MAML (or Reptile) on Omniglot, sinusoids or the metabolism assays.',
                    algorithms=('maml', 'reptile'), datasets=('omniglot', 'sinusoid', 'metabolism'))


def main(argv=None):
    return cli.main(SCRIPT, argv)


if __name__ == '__main__':
    util.run_cli(main)
