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

from fewshot import contracts, execution, flags, networks, tasks
from fewshot.algorithms import inner_loop
from fewshot.algorithms.inner_loop import InnerLoop, Variants
from fewshot.errors import UserError
from fewshot.flags import AUTO_YES_NO, TEST_TIME, Flag, auto_yes_no, non_negative_int, positive_float, positive_int


GROUP_GRAPH_BYTES = 256 * 2 ** 20  # the most autograd graph grouped tasks hold at once, in their trial and training
FAST_NOTICE = ('the library computes the steps (fewshot/algorithms/maml.py: the fastest way tuned, a meta-batch\'s '
               "tasks at once where faster), tested equal to maml.py's MAML._inner_loop and _outer_step")


class MAML(contracts.Learner):
    """A MAML learner: the meta-parameters and inner learning rates, the per-task definition of a
    step (_inner_loop, _outer_step: the library's, through InnerLoop.adapt; maml.py's MAML writes
    them out), and what the training loop needs.

    By default every step goes task by task through _outer_step. fast: the library's ways to
    compute the same numbers are offered to tuning (a meta-batch's tasks at once by vmap or as
    grouped convolutions, channels-last images), and the program says so (notice).
    Before each task's _outer_step the learner sets second_order (whether its inner loop builds
    the graph of its gradients: not first_order, and from --anneal_derivative_order's step on)
    and step_weights (the multi-step loss's weights of the query losses after inner steps 1..L,
    or None for the last step's alone)."""

    key_metric = 'post_adapt_query'

    def __init__(self, params, forward, task=tasks.CLASSIFICATION, num_inner_steps=inner_loop.NUM_INNER_STEPS,
                 inner_lr=inner_loop.INNER_LR, learn_inner_lrs=False, first_order=False, device='cpu',
                 vmap_tasks=None, variants=None, channels_last=False, group_tasks=False, fast=False):
        """params, forward: the network with its head, forward(params, x, fused_bn=..., norm=...) -> (M, outputs).
        task: tasks.CLASSIFICATION or tasks.REGRESSION (the loss and the per-task metric).
        fast: False runs every step task by task, images contiguous (vmap_tasks, group_tasks and
        channels_last left at None take that way)."""
        if not fast:
            vmap_tasks, group_tasks = bool(vmap_tasks), bool(group_tasks)
            channels_last = bool(channels_last)
        self.inner = InnerLoop(params, forward, task, num_inner_steps, inner_lr, learn_inner_lrs, device,
                               vmap_tasks, variants, channels_last, group_tasks)
        self.device, self.task, self.variants = self.inner.device, task, self.inner.variants
        self.first_order = first_order
        self.second_order = not first_order  # of the task _outer_step runs now (class docstring)
        self.step_weights = None
        self.num_outputs = params['head'].shape[0] if 'head' in params else None
        self.lr_schedule = 'cosine' if self.variants.cosine_outer_lr else 'constant'
        self.lr_tag = 'outer_lr' if self.variants.cosine_outer_lr else None
        self.tasks_per_group = 0  # grouped tasks per call and backward (0: the meta-batch); see execution_options
        self.notice = FAST_NOTICE if fast and (self.inner.tunable or self.inner.group_tunable or
                                               self.inner.vmap_tasks or self.inner.group_tasks) else None

    # what the per-task definition reads
    @property
    def meta_parameters(self):
        """{name: tensor}: the network's meta-learned parameters (theta)."""
        return self.inner.meta_parameters

    @property
    def adapted_keys(self):
        """The names of the parameters the inner loop adapts (all; the head alone with --anil)."""
        return self.inner.adapted_keys

    @property
    def num_inner_steps(self):
        return self.inner.num_inner_steps

    def inner_lr(self, key, step):
        """The inner learning rate of a parameter at an inner step (learned ones are tensors that train)."""
        return self.inner.inner_lr(key, step)

    def forward(self, images, parameters, step=0, train=False, differentiated_twice=False):
        """(M, ...) examples of one task -> (M, outputs) under the given parameters; step and train
        pick --per_step_bn's batch-norm row and statistics; differentiated_twice (a second-order
        inner step's pass) keeps the images contiguous, whose double backward is faster."""
        return self.inner.forward(images, parameters, step, train, differentiated_twice)

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

    # the library's per-task definition (maml.py's MAML writes it out)
    def _inner_loop(self, images, labels, train, every_step=False):
        """Adapt the meta-parameters to one task's support set (InnerLoop.adapt): (the adapted
        parameters, or with every_step the L dicts after each inner step; L+1 support metrics,
        before each step and after the last; the L dicts of inner-loop gradients)."""
        history, metrics, gradients = self.inner.adapt(images, labels, create_graph=train and self.second_order,
                                                       train=train)
        return (history[1:] if every_step else history[-1]), metrics.tolist(), gradients

    def _outer_step(self, task_batch, train):
        """Adapt to each task's support set and score the adapted parameters on its query set:
        (query loss, pre-adapt support metric, post-adapt support metric, post-adapt query metric),
        means over the tasks; with step_weights, each task's loss weighs its query losses after
        every inner step."""
        losses, pre_adapt_support, post_adapt_support, post_adapt_query = [], [], [], []
        for images_support, labels_support, images_query, labels_query in task_batch:
            steps, metrics, _ = self._inner_loop(images_support, labels_support, train, every_step=True)
            scored = range(1, len(steps) + 1) if self.step_weights is not None else [len(steps)]
            with torch.set_grad_enabled(train):
                outputs = [self.forward(images_query, steps[step - 1], step, train) for step in scored]
                losses.append(self._query_objective([self.task.loss(x, labels_query) for x in outputs],
                                                    self.step_weights))
            pre_adapt_support.append(metrics[0])
            post_adapt_support.append(metrics[-1])
            post_adapt_query.append(self.task.metric(outputs[-1], labels_query).item())
        return (torch.stack(losses).mean(), sum(pre_adapt_support) / len(task_batch),
                sum(post_adapt_support) / len(task_batch), sum(post_adapt_query) / len(task_batch))

    def task_metrics(self, task_batch, train, second_order=None, loss_weights=None):
        """The outer loss and (B,) per-task metrics: task by task through _outer_step, or (fast)
        for all tasks at once by vmap or grouped tasks (the same numbers: tests/algorithms/
        test_maml.py, test_grouped_tasks.py).

        second_order: None follows first_order. loss_weights: (L,) weights of the
        query losses after inner steps 1..L (MSL); None: the last step only (eq. 9).
        """
        if self.task is tasks.CLASSIFICATION and task_batch.labels_support.max() >= self.num_outputs:
            raise UserError(f'tasks have more classes than the {self.num_outputs}-way head this MAML was '
                            f'trained with; use --num_way {self.num_outputs}')
        self.second_order = not self.first_order if second_order is None else second_order
        self.step_weights = loss_weights if self.inner.num_inner_steps > 1 else None
        if not (self.inner.vmap_tasks or self.inner.group_tasks):
            return self._task_by_task(task_batch, train)
        inner = self.inner
        create_graph = train and self.second_order
        history, support = inner.adapt_tasks(task_batch.images_support, task_batch.labels_support, create_graph, train)
        images_query, labels_query = task_batch.images_query, task_batch.labels_query
        steps = range(1, inner.num_inner_steps + 1) if self.step_weights is not None else [inner.num_inner_steps]
        with torch.set_grad_enabled(train):
            outputs = [inner.forward_tasks(images_query, history[step]) for step in steps]
            loss = self._query_objective([self.task.loss(x, labels_query) for x in outputs], self.step_weights)
        metrics = {'pre_adapt_support': support[:, 0], 'post_adapt_support': support[:, -1],
                   'post_adapt_query': self.task.metric(outputs[-1], labels_query)}
        return loss, self._with_pre_adapt_query(metrics, task_batch, train)

    def _task_by_task(self, task_batch, train):
        """task_metrics one task at a time, each through _outer_step: (mean loss, (B,) metrics)."""
        losses, rows = [], []
        for index in range(len(task_batch)):
            loss, *metrics = self._outer_step(task_batch.select(slice(index, index + 1)), train)
            losses.append(loss)
            rows.append(metrics)
        columns = torch.tensor(rows, dtype=torch.float64, device=self.device).T
        metrics = dict(zip(('pre_adapt_support', 'post_adapt_support', 'post_adapt_query'), columns))
        return torch.stack(losses).mean(), self._with_pre_adapt_query(metrics, task_batch, train)

    @staticmethod
    def _query_objective(losses, loss_weights):
        """The query losses after inner steps 1..L, weighted (MSL), or the last alone."""
        if loss_weights is None or len(losses) == 1:
            return losses[-1]
        return sum(w * x for w, x in zip(loss_weights.tolist(), losses))

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
                group_tasks=auto_yes_no(vars(args).get('group_tasks', 'no')),  # Reptile: per task
                fast=execution.library_steps(args))


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

    def build_learner(self, args, dataset, device, learner_class=None):
        return (learner_class or MAML)(first_order=args.first_order, learn_inner_lrs=args.learn_inner_lrs,
                                       **inner_loop_options(args, dataset, device))

    def log_name(self, args, changed):
        return inner_loop_log_name(args, args.learn_inner_lrs, changed)


def inner_loop_log_name(args, learn_inner_lrs, changed):
    """MAML's and Reptile's hyperparameters part of the default log dir."""
    name = (flags.task_log_name(args) + f'.inner_steps_{args.num_inner_steps or inner_loop.NUM_INNER_STEPS}.inner_lr_{args.inner_lr}'
            f'.learn_inner_lrs_{learn_inner_lrs}.outer_lr_{args.learning_rate}.batch_size_{args.batch_size}')
    return name + changed + (f'.eps_{args.inner_adagrad_eps}' if args.inner_optimizer == 'adagrad' else '')
