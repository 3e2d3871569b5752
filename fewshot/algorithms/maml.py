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
"""
import torch

from fewshot import contracts, execution, flags, networks, registry, tasks
from fewshot.algorithms import graded, inner_loop
from fewshot.algorithms.inner_loop import InnerLoop, Variants
from fewshot.errors import UserError
from fewshot.flags import AUTO_YES_NO, TEST_TIME, Flag, auto_yes_no, non_negative_int, positive_float, positive_int


GRADED = ('MAML._inner_loop', 'MAML._outer_step')
GROUP_GRAPH_BYTES = 256 * 2 ** 20  # the most autograd graph grouped tasks hold at once, in their trial and training


class MAML(contracts.Learner):
    """A MAML learner: the inner loop, the outer loss, and what the training loop needs."""

    key_metric = 'post_adapt_query'

    def __init__(self, params, forward, task=tasks.CLASSIFICATION, num_inner_steps=inner_loop.NUM_INNER_STEPS,
                 inner_lr=inner_loop.INNER_LR, learn_inner_lrs=False, first_order=False, device='cpu',
                 vmap_tasks=None, variants=None, channels_last=False, group_tasks=False):
        """params, forward: the network with its head, forward(params, x, fused_bn=..., norm=...) -> (M, outputs).
        task: tasks.CLASSIFICATION or tasks.REGRESSION (the loss and the per-task metric)."""
        self.inner = InnerLoop(params, forward, task, num_inner_steps, inner_lr, learn_inner_lrs, device,
                               vmap_tasks, variants, channels_last, group_tasks)
        self.device, self.task, self.variants = self.inner.device, task, self.inner.variants
        self.first_order = first_order
        self._order = None  # the order task_metrics was asked for while it runs _outer_step (None: first_order's)
        self.num_outputs = params['head'].shape[0] if 'head' in params else None
        self.lr_schedule = 'cosine' if self.variants.cosine_outer_lr else 'constant'
        self.lr_tag = 'outer_lr' if self.variants.cosine_outer_lr else None
        self.tasks_per_group = 0  # grouped tasks per call and backward (0: the meta-batch); see execution_options
        self.notice = graded.notice(type(self), GRADED)
        if self.notice:  # the faster ways compute what the shipped methods do: run the edited ones task by task
            inner = self.inner
            inner.vmap_tasks = inner.group_tasks = inner.tunable = inner.group_tunable = False

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

    @property
    def second_order(self):
        """Whether the inner loop builds the graph of its gradients when training (the course's
        _inner_loop reads it): not first_order, or the order task_metrics was asked for."""
        return not self.first_order if self._order is None else self._order

    def _inner_loop(self, images, labels, train):
        raise NotImplementedError('the per-task definition of MAML is the course\'s: maml.py\'s MAML._inner_loop')

    def _outer_step(self, task_batch, train):
        raise NotImplementedError('the per-task definition of MAML is the course\'s: maml.py\'s MAML._outer_step')

    def task_metrics(self, task_batch, train, second_order=None, loss_weights=None):
        """The outer loss and (B,) per-task metrics: task by task through the graded _outer_step,
        or for all tasks at once by vmap or grouped tasks (the same numbers: tests/algorithms/
        test_maml.py, test_grouped_tasks.py).

        second_order: None follows first_order. loss_weights: (L,) weights of the
        query losses after inner steps 1..L (MSL); None: the last step only (eq. 9).
        """
        if self.task is tasks.CLASSIFICATION and task_batch.labels_support.max() >= self.num_outputs:
            raise UserError(f'tasks have more classes than the {self.num_outputs}-way head this MAML was '
                            f'trained with; use --num_way {self.num_outputs}')
        if not (self.inner.vmap_tasks or self.inner.group_tasks):
            return self._through_outer_step(task_batch, train, second_order, loss_weights)
        inner = self.inner
        create_graph = train and (self.second_order if second_order is None else second_order)
        history, support = inner.adapt_tasks(task_batch.images_support, task_batch.labels_support, create_graph, train)
        images_query, labels_query = task_batch.images_query, task_batch.labels_query
        steps = range(1, inner.num_inner_steps + 1) if loss_weights is not None else [inner.num_inner_steps]
        with torch.set_grad_enabled(train):
            outputs = [inner.forward_tasks(images_query, history[step]) for step in steps]
            loss = self._query_objective([self.task.loss(x, labels_query) for x in outputs], loss_weights)
        metrics = {'pre_adapt_support': support[:, 0], 'post_adapt_support': support[:, -1],
                   'post_adapt_query': self.task.metric(outputs[-1], labels_query)}
        return loss, self._with_pre_adapt_query(metrics, task_batch, train)

    def _through_outer_step(self, task_batch, train, second_order, loss_weights):
        """task_metrics task by task: each task's _outer_step (which adapts by _inner_loop); with
        loss_weights, the query losses after the earlier inner steps are added to its loss, from
        the history of the one adaptation _inner_loop made."""
        losses, rows = [], []
        self._order, self.inner.histories = second_order, []
        try:
            for index in range(len(task_batch)):
                task = task_batch.select(slice(index, index + 1))
                del self.inner.histories[:]
                loss, *metrics = self._outer_step(task, train)
                if loss_weights is not None and self.inner.num_inner_steps > 1:
                    loss = self._query_objective([*self._earlier_query_losses(task, train), loss], loss_weights)
                losses.append(loss)
                rows.append(metrics)
        finally:
            self._order, self.inner.histories = None, None
        columns = torch.tensor(rows, dtype=torch.float64, device=self.device).T
        metrics = dict(zip(('pre_adapt_support', 'post_adapt_support', 'post_adapt_query'), columns))
        return torch.stack(losses).mean(), self._with_pre_adapt_query(metrics, task_batch, train)

    def _earlier_query_losses(self, task, train):
        """The query losses of one task after inner steps 1..L-1, from _inner_loop's adaptation."""
        if len(self.inner.histories) != 1:
            raise UserError('--multi_step_loss needs MAML._inner_loop to adapt each task once through '
                            f'self.inner.adapt (it adapted {len(self.inner.histories)} times); drop the flag')
        history, (images_query, labels_query) = self.inner.histories[0], (task.images_query[0], task.labels_query[0])
        with torch.set_grad_enabled(train):
            return [self.task.loss(self.inner.forward(images_query, history[step], step, train), labels_query)
                    for step in range(1, self.inner.num_inner_steps)]

    @staticmethod
    def _query_objective(losses, loss_weights):
        """The query losses after inner steps 1..L, weighted (MSL), or the last alone."""
        if loss_weights is None or len(losses) == 1:
            return losses[-1]
        return loss_weights[-1] * losses[-1] + sum(w * x for w, x in zip(loss_weights[:-1].tolist(), losses[:-1]))

    def _with_pre_adapt_query(self, metrics, task_batch, train):
        """metrics with 'pre_adapt_query', the query metric of the meta-parameters, at evaluation
        and for regression (in training a classifier's would cost a forward pass)."""
        if train and self.task is not tasks.REGRESSION:
            return metrics
        meta = {k: v.detach() for k, v in self.inner.meta_parameters.items()}
        with torch.no_grad(), networks.training(False):  # no dropout drawn, no running statistics updated
            outputs = torch.stack([self.inner.forward(x, meta, 0, False) for x in task_batch.images_query])
        return {**metrics, 'pre_adapt_query': self.task.metric(outputs, task_batch.labels_query)}

    def loss(self, task_batch, step):
        """The training objective at outer step `step` (scalar) and (B,) per-task metrics."""
        weights = self._multi_step_weights(step) if self.variants.multi_step_loss else None
        return self.task_metrics(task_batch, train=True, second_order=self._second_order_at(step),
                                  loss_weights=weights)

    @property
    def tasks_per_backward(self):
        """A backward per task for the per-task loop (one task's graph held at a time, as fast on a
        CPU: bench.py), one per meta-batch with vmap, one per group of grouped tasks."""
        if self.inner.group_tasks:
            return self.tasks_per_group
        return 0 if self.inner.vmap_tasks else 1

    def execution_options(self, sample=None):
        """{name: switch to it}: a per-task loop, vmap over tasks or the tasks as groups of one
        convolution; contiguous or channels-last images (the same numbers to round-off).
        Given a sample, grouped tasks go in groups of at most GROUP_GRAPH_BYTES of graph, and
        are offered only where a group holds as many tasks as the trial (tuning.TUNE_TASKS, at
        most the sample's): where a task's graph is large, grouping saves little time and
        would hold more memory than the per-task loop's training. With one task a step there
        is nothing to group."""
        def use(vmap_tasks, group_tasks):
            return lambda: (setattr(self.inner, 'vmap_tasks', vmap_tasks),
                            setattr(self.inner, 'group_tasks', group_tasks))
        ways = {'per-task inner loops': use(False, False)}
        if self.inner.tunable:
            ways['vmap over tasks'] = use(True, False)
        if self.inner.group_tunable and (sample is None or len(sample) > 1):
            if sample is not None:
                self.tasks_per_group = max(1, GROUP_GRAPH_BYTES // self.graph_bytes(sample))
            if sample is None or self.tasks_per_group >= len(sample):
                ways['tasks as groups of one convolution'] = use(False, True)
        return execution.combine(ways if len(ways) > 1 else {}, self.inner.layout.options())

    def graph_bytes(self, task_batch):
        """The bytes of the tensors autograd saves for a training step's backward on the first task
        of task_batch (second order where the run has it), counting each storage once."""
        saved = {}

        def note(tensor):
            storage = tensor.untyped_storage()
            saved[storage.data_ptr()] = storage.nbytes()
            return tensor
        with torch.autograd.graph.saved_tensors_hooks(note, lambda tensor: tensor):
            self.loss(task_batch.select(slice(0, 1)), self.variants.anneal_derivative_order)
        return max(1, sum(saved.values()))

    def evaluate(self, task_batch):
        """(B,) per-task metrics after adapting to each support set, and the query loss."""
        loss, metrics = self.task_metrics(task_batch, train=False)
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


# ---------------------------------------------------------------- the algorithm

NUM_INNER_STEPS = Flag('--num_inner_steps', type=positive_int, default=None, at_test=TEST_TIME,
                       help=f'inner-loop steps (default {inner_loop.NUM_INNER_STEPS}; at --test: as trained unless given)')
INNER_LR = Flag('--inner_lr', type=positive_float, default=inner_loop.INNER_LR, help='inner-loop learning rate (initial if learned)')
VMAP_TASKS = Flag('--vmap_tasks', choices=AUTO_YES_NO, default='auto', execution=True, at_test=TEST_TIME,
                  resume_may_change=True,
                  help='adapt the tasks of a meta-batch with torch.vmap (same numbers); auto: no on a CPU (the '
                       'per-task loop: faster, and leaner, on the CPUs measured); on a GPU the faster, timed once '
                       'at the start of training and cached (at --test and under torchrun: yes)')
GROUP_TASKS = Flag('--group_tasks', choices=AUTO_YES_NO, default='auto', execution=True, at_test=TEST_TIME,
                   resume_may_change=True,
                   help="adapt the tasks of a meta-batch at once, as the groups of one grouped convolution per "
                        "layer (conv networks; same numbers); auto: timed against the other ways at the start "
                        "of training and cached (at --test and under torchrun: no)")
INNER_OPTIMIZER = Flag('--inner_optimizer', choices=['sgd', 'adagrad'], default=Variants.inner_optimizer,
                       log_name=True, help="the inner loop's optimizer")
INNER_ADAGRAD_EPS = Flag('--inner_adagrad_eps', type=positive_float, default=Variants.inner_adagrad_eps,
                         help='Adagrad inner eps (the NTU report: 0.7)')
ANIL = Flag('--anil', default=Variants.anil, action='store_true', log_name=True,
            help='adapt only the head in the inner loop')
INNER_LOOP_FLAGS = (NUM_INNER_STEPS, INNER_LR, VMAP_TASKS, INNER_OPTIMIZER, INNER_ADAGRAD_EPS, ANIL)  # Reptile's too
FLAGS = (  # MAML's: the inner loop's and the meta-gradient's, in the order their log-dir names take
    NUM_INNER_STEPS, INNER_LR,
    Flag('--learn_inner_lrs', default=False, action='store_true',
         help='learn one inner learning rate per parameter tensor'),
    Flag('--first_order', default=False, action='store_true', log_name=True, help='first-order MAML (FOMAML)'),
    VMAP_TASKS, GROUP_TASKS, INNER_OPTIMIZER, INNER_ADAGRAD_EPS,
    Flag('--learn_inner_lrs_per_step', default=Variants.learn_inner_lrs_per_step, action='store_true', log_name=True,
         help='LSLR: learn an inner LR per parameter tensor and inner step'),
    ANIL,
    Flag('--anneal_derivative_order', type=non_negative_int, default=Variants.anneal_derivative_order, metavar='N',
         log_name=True, help='first-order for the first N outer steps, second-order after'),
    Flag('--multi_step_loss', default=Variants.multi_step_loss, action='store_true', log_name=True,
         help='MSL: query losses after every inner step, annealed towards the last'),
    Flag('--cosine_outer_lr', default=Variants.cosine_outer_lr, action='store_true', log_name=True,
         help='cosine annealing of the outer LR over the run'),
    Flag('--per_step_bn', default=Variants.per_step_bn, action='store_true', log_name=True,
         help='per-step BN weights, biases and running statistics (used at evaluation)'),
)


def inner_loop_options(args, dataset, device):
    """The keyword arguments of MAML and Reptile for the run's flags and dataset (the variants'
    flags a run lacks at their defaults)."""
    params, forward = dataset.network(args, num_outputs=args.num_way)
    return dict(params=params, forward=forward, task=dataset.task, num_inner_steps=args.num_inner_steps,
                inner_lr=args.inner_lr, device=device,
                vmap_tasks=auto_yes_no(args.vmap_tasks), variants=Variants.from_args(args),
                channels_last=execution.image_layout_flag(args, dataset),
                group_tasks=auto_yes_no(vars(args).get('group_tasks', 'no')))  # Reptile: per task


class MAMLAlgorithm(contracts.Algorithm):
    name = 'maml'
    task_kinds = ('classification', 'regression')
    defaults = dict(num_train_iterations=15000)
    flags = FLAGS

    def check_args(self, args):
        """To train, an unset --num_inner_steps is 1 (at --test: as trained). Training tasks have
        --num_way classes: the head's outputs."""
        if not args.test and args.num_inner_steps is None:
            args.num_inner_steps = inner_loop.NUM_INNER_STEPS
        if args.train_num_way not in (None, args.num_way):
            raise UserError(f'--train_num_way {args.train_num_way}: the {args.algorithm} head has --num_way '
                            f'{args.num_way} outputs, so its training tasks have {args.num_way} classes; drop it')

    def recognizes_older(self, checkpoint):
        return 'meta_parameters' in checkpoint['learner']

    def build_learner(self, args, dataset, device):
        return registry.learner_class(self.name)(first_order=args.first_order, learn_inner_lrs=args.learn_inner_lrs,
                                                 **inner_loop_options(args, dataset, device))

    def log_name(self, args, changed):
        return inner_loop_log_name(args, args.learn_inner_lrs, changed)


def inner_loop_log_name(args, learn_inner_lrs, changed):
    """MAML's and Reptile's hyperparameters part of the default log dir."""
    name = (flags.task_log_name(args) + f'.inner_steps_{args.num_inner_steps or inner_loop.NUM_INNER_STEPS}.inner_lr_{args.inner_lr}'
            f'.learn_inner_lrs_{learn_inner_lrs}.outer_lr_{args.learning_rate}.batch_size_{args.batch_size}')
    return name + changed + (f'.eps_{args.inner_adagrad_eps}' if args.inner_optimizer == 'adagrad' else '')
