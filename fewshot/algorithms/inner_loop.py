"""The inner loop shared by MAML and Reptile: meta-parameters, inner learning
rates, and the adaptation of the meta-parameters to one task's examples (a
per-task loop) or to a batch of tasks at once (torch.vmap, or the network's
version that takes the tasks as the groups of grouped convolutions).

The inner-loop options (Adagrad steps, per-step learned rates, ANIL, MAML++'s
per-step batch norm) are fields of `Variants`; argparse takes its defaults
from there.
"""
import dataclasses

import torch
import torch.nn.functional as F

from fewshot import execution, networks, tasks
from fewshot.errors import UserError

NUM_INNER_STEPS, INNER_LR = 1, 0.4  # the course's defaults: one inner step of 0.4


@dataclasses.dataclass
class Variants:
    """Options beyond plain MAML, all off by default."""
    inner_optimizer: str = 'sgd'  # 'adagrad': n += g^2, phi -= lr * g / sqrt(n + eps), per task
    inner_adagrad_eps: float = 0.7
    learn_inner_lrs_per_step: bool = False  # LSLR: one learned LR per tensor and inner step
    anil: bool = False  # adapt only the head in the inner loop
    anneal_derivative_order: int = 0  # first-order for the first N outer steps, then second-order
    multi_step_loss: bool = False  # MSL: weighted query losses after every inner step
    cosine_outer_lr: bool = False  # cosine annealing of the outer LR to 0 over the run
    per_step_bn: bool = False  # BNRS + BNWB: per-step batch-norm weights, biases and running statistics
    num_train_iterations: int = 1  # the run's length, for the MSL schedule

    @classmethod
    def from_args(cls, args):
        """The variants of a run's flags; those it has no flag for (Reptile's) at their defaults."""
        given = vars(args)
        return cls(**{f.name: given[f.name] for f in dataclasses.fields(cls) if f.name in given})


class PerStepBatchNorm:
    """MAML++ BNWB + BNRS: each batch-norm weight and bias becomes (L+1, C), one row per
    inner step and one for the adapted pass, and each row has running statistics,
    updated while meta-training and used instead of batch statistics when evaluating."""

    def __init__(self, params, num_inner_steps, device):
        blocks = sorted(k for k in params if k.startswith('bn') and k.endswith('_weight'))
        if not blocks:
            raise UserError('--per_step_bn needs a network with batch norm (not --dataset sinusoid)')
        like = {'dtype': params[blocks[0]].dtype, 'device': device}
        self.running = [[(torch.zeros(params[k].shape[0], **like), torch.ones(params[k].shape[0], **like))
                         for k in blocks] for _ in range(num_inner_steps + 1)]  # [row][block] -> (mean, var)

    def expand(self, params):
        """params with each bn tensor (C,) repeated into (L+1, C) rows."""
        rows = len(self.running)
        return {k: v.expand(rows, *v.shape).clone() if k.startswith('bn') else v for k, v in params.items()}

    def norm(self, parameters, step, train):
        """norm(x, i) for block i at an inner step (past the trained steps: the last row):
        batch statistics that update the running ones when train, else the running ones."""
        row = min(step, len(self.running) - 1)

        def norm(x, i):
            mean, var = self.running[row][i]
            return F.batch_norm(x, mean, var, parameters[f'bn{i}_weight'][row], parameters[f'bn{i}_bias'][row],
                                training=train, momentum=0.1, eps=networks.BN_EPS)
        return norm

    def check_rows(self, meta_parameters):
        rows = meta_parameters['bn0_weight'].shape[0]
        if rows != len(self.running):
            raise UserError(f'this --per_step_bn model has batch-norm rows for {rows - 1} inner steps; '
                            f'test it with --num_inner_steps {rows - 1}')

    def state(self):
        return [[(mean.cpu(), var.cpu()) for mean, var in row] for row in self.running]

    def load_state(self, saved):
        for row, saved_row in zip(self.running, saved):
            for (mean, var), (saved_mean, saved_var) in zip(row, saved_row):
                mean.copy_(saved_mean)
                var.copy_(saved_var)


class InnerLoop:
    """Meta-parameters theta, inner learning rates, and phi = adapt(theta, task examples)."""

    def __init__(self, params, forward, task=tasks.CLASSIFICATION, num_inner_steps=NUM_INNER_STEPS, inner_lr=INNER_LR,
                 learn_inner_lrs=False, device='cpu', vmap_tasks=None, variants=None, channels_last=False,
                 group_tasks=False):
        """params, forward: the network, forward(params, x, fused_bn=..., norm=...) -> (M, outputs).
        vmap_tasks: adapt a meta-batch's tasks with torch.vmap (True) or in a loop (False);
        None: the loop on a CPU; on a GPU vmap, or the faster of both when tuning times them.
        group_tasks: adapt them all at once through the network's grouped version
        (networks.TASKS_AS_GROUPS: conv nets) (True), or not (False); None: offered to tuning
        where the network has one.
        channels_last: give a conv network its (C, H, W) images channels-last (execution.ImageLayout),
        but for second-order inner steps (forward); None: the device's default, both offered to tuning."""
        self.device = torch.device(device)
        self.task = task
        self.num_inner_steps = num_inner_steps
        self.variants = variants or Variants()
        self.vmap_tasks = self.device.type != 'cpu' if vmap_tasks is None else vmap_tasks
        # on a CPU the loop, untimed: vmap's trial alone would hold more graph than the loop's training
        # (docs/benchmarks.md: the loop 2-2.4x faster with under half the memory on the CPUs measured)
        # a way given (--vmap_tasks or --group_tasks yes) is kept: tuning then times the layouts only
        self.tunable = vmap_tasks is None and not group_tasks and self.device.type != 'cpu'
        self.layout = execution.ImageLayout(channels_last, self.device)
        self._network = forward
        self.per_step_bn = None
        self.grouped_network = networks.TASKS_AS_GROUPS.get(forward)
        if group_tasks and self.grouped_network is None:
            raise UserError('--group_tasks yes needs a conv network (--dataset omniglot); drop it')
        if group_tasks and vmap_tasks:
            raise UserError('--group_tasks yes and --vmap_tasks yes are two ways to batch tasks; choose one')
        self.group_tasks = bool(group_tasks)
        self.group_tunable = group_tasks is None and not vmap_tasks and self.grouped_network is not None
        if self.variants.per_step_bn:
            if group_tasks:
                raise UserError('--group_tasks yes: --per_step_bn updates running statistics task by task; drop one')
            self.per_step_bn = PerStepBatchNorm(params, num_inner_steps, self.device)
            params = self.per_step_bn.expand(params)
            # running statistics are updated in place: per-task loop only
            self.vmap_tasks = self.tunable = self.group_tunable = False
        self.meta_parameters = {k: v.to(self.device).requires_grad_() for k, v in params.items()}
        self.adapted_keys = [k for k in params if self._adapts(k)]
        per_step = self.variants.learn_inner_lrs_per_step
        self.learn_inner_lrs = learn_inner_lrs or per_step
        dtype = next(iter(params.values())).dtype
        self.inner_lrs = {k: torch.full((num_inner_steps,) if per_step else (), inner_lr, dtype=dtype,
                                        device=self.device, requires_grad=self.learn_inner_lrs)
                          for k in self.adapted_keys}

    def _adapts(self, key):
        """Whether the inner loop updates this tensor: the head always; the body unless
        ANIL; per-step batch-norm rows never (they are meta-learned only)."""
        if key.startswith('head'):
            return True
        return not self.variants.anil and not (self.variants.per_step_bn and key.startswith('bn'))

    def forward(self, images, parameters, step=0, train=False, differentiated_twice=False):
        """(M, ...) examples of one task -> (M, outputs) under the given parameters.
        --per_step_bn: step picks the batch-norm row; train normalises with the batch's
        statistics and updates the running ones, else the running ones are used.
        differentiated_twice: a second-order inner step's pass; its images stay contiguous even
        with channels_last, whose double backward was slower (bench.py --only layout)."""
        if not differentiated_twice:
            images = self.layout(images)
        if self.per_step_bn is None:
            return self._network(parameters, images, fused_bn=not self.vmap_tasks)
        return self._network(parameters, images, norm=self.per_step_bn.norm(parameters, step, train))

    def forward_grouped(self, images, parameters, differentiated_twice=False):
        """(B, M, ...) examples of B tasks -> (B, M, outputs) under (B, *shape) parameters, through
        the network's grouped version; channels-last as forward() lays them out."""
        channels_last = self.layout.channels_last and not differentiated_twice
        return self.grouped_network(parameters, images, channels_last=channels_last)

    def inner_lr(self, key, step):
        """The inner LR of a tensor at an inner step (LSLR: its own; past the trained steps: the last)."""
        lr = self.inner_lrs[key]
        return lr[min(step, lr.shape[0] - 1)] if lr.dim() else lr

    def _update(self, parameters, grads, squares, step):
        """One inner step on the adapted tensors: SGD, or Adagrad with squares = running sums of g^2."""
        parameters, squares = dict(parameters), dict(squares)
        for k in self.adapted_keys:
            direction = grads[k]
            if self.variants.inner_optimizer == 'adagrad':
                squares[k] = squares.get(k, 0) + direction.square()
                direction = direction / torch.sqrt(squares[k] + self.variants.inner_adagrad_eps)
            parameters[k] = parameters[k] - self.inner_lr(k, step) * direction
        return parameters, squares

    def adapt(self, images, labels, create_graph, train, way=None):
        """Adapt to one task's examples, images (M, ...) and labels (M,) or (M, outputs); or, with
        way=GROUPED, to B tasks' at once, (B, M, ...) and (B, M), each parameter a (B, *shape)
        tensor of rows. The one inner loop: adapt_tasks wraps it for a batch of tasks.

        Returns:
            history: L+1 parameter dicts, the meta-parameters then after each inner step.
            metrics: (L+1,) metrics on these examples, before each step and after the last ((B, L+1) grouped).
            gradients: the L dicts of inner-loop gradients of the adapted tensors.
        With train=False nothing returned requires grad.
        """
        way = way or PER_TASK
        parameters = way.start(self.meta_parameters if train else detached(self.meta_parameters), images)
        history, metrics, gradients, squares = [parameters], [], [], {}
        for step in range(self.num_inner_steps):
            if not train and way.fresh_leaves:  # evaluation: the adapted tensors are leaves of this step's graph
                parameters = {k: v.detach().requires_grad_(k in self.adapted_keys) for k, v in parameters.items()}

            def support_loss(adapted, parameters=parameters, step=step):
                outputs = way.forward(self, images, {**parameters, **adapted}, step, train, create_graph)
                return way.loss(self.task, outputs, labels), outputs
            grads, outputs = way.gradients(support_loss, {k: parameters[k] for k in self.adapted_keys}, create_graph)
            metrics.append(self.task.metric(outputs, labels))
            gradients.append(grads)
            parameters, squares = self._update(parameters, grads, squares, step)
            if not train:
                parameters, squares = detached(parameters), detached(squares)
            history.append(parameters)
        with torch.no_grad():
            metrics.append(self.task.metric(way.forward(self, images, parameters, self.num_inner_steps, train), labels))
        return history, torch.stack(metrics, dim=-1), gradients

    def adapt_tasks(self, images, labels, create_graph, train):
        """adapt() for a batch of tasks at once: grouped (group_tasks), or with torch.vmap.

        Args: images (B, M, ...), labels (B, M) or (B, M, outputs).
        Returns: history (L+1 dicts of (B, *shape) parameters) and (B, L+1) metrics.
        """
        if self.group_tasks:
            return self.adapt(images, labels, create_graph, train, GROUPED)[:2]

        def adapt(x, y):
            return self.adapt(x, y, create_graph, train, VMAPPED)[:2]
        with torch.set_grad_enabled(train):
            return torch.vmap(adapt, randomness='different')(images, labels)

    def forward_tasks(self, images, parameters):
        """(B, M, ...) examples of B tasks -> (B, M, outputs) under (B, *shape) parameters, as adapt_tasks adapts."""
        if self.group_tasks:
            return self.forward_grouped(images, parameters)
        return torch.vmap(self.forward, randomness='different')(images, parameters)

    def state(self):
        state = {'meta_parameters': {k: v.detach().cpu() for k, v in self.meta_parameters.items()},
                 'inner_lrs': {k: v.detach().cpu() for k, v in self.inner_lrs.items()}}
        if self.per_step_bn is not None:
            state['bn_running'] = self.per_step_bn.state()
        return state

    def load_state(self, state):
        if self.per_step_bn is not None:
            self.per_step_bn.check_rows(state['meta_parameters'])
        with torch.no_grad():
            for k, v in state['meta_parameters'].items():
                self.meta_parameters[k].copy_(v)
            for k, v in state['inner_lrs'].items():
                self.inner_lrs[k].copy_(v)
            if self.per_step_bn is not None:
                self.per_step_bn.load_state(state['bn_running'])


def detached(tensors):
    return {k: v.detach() for k, v in tensors.items()}


def autograd_gradients(loss_of, adapted, create_graph):
    """({key: d loss / d tensor}, outputs) of loss_of(adapted) -> (loss, outputs), by torch.autograd.grad."""
    with torch.enable_grad():
        loss, outputs = loss_of(adapted)
        grads = torch.autograd.grad(loss, list(adapted.values()), create_graph=create_graph)
    return dict(zip(adapted, grads)), outputs


def functional_gradients(loss_of, adapted, create_graph):
    """The same by torch.func.grad, which works inside torch.vmap (first-order: detached)."""
    grads, outputs = torch.func.grad(loss_of, has_aux=True)(adapted)
    return (grads if create_graph else detached(grads)), outputs


class PerTask:
    """How adapt() goes over one task's examples (M, ...): the network's forward, gradients by autograd."""
    fresh_leaves = True  # at evaluation, each step's parameters become leaves that require grad
    gradients = staticmethod(autograd_gradients)

    def start(self, parameters, images):
        return parameters

    def forward(self, inner, images, parameters, step, train, differentiated_twice=False):
        return inner.forward(images, parameters, step, train, differentiated_twice)

    def loss(self, task, outputs, labels):
        return task.loss(outputs, labels)


class Grouped(PerTask):
    """B tasks' examples (B, M, ...) at once through the network's grouped version, each parameter
    a (B, *shape) tensor of rows: the gradient of the sum of the tasks' losses by a row is that
    task's own."""

    def start(self, parameters, images):
        return {k: v.expand(len(images), *v.shape) for k, v in parameters.items()}

    def forward(self, inner, images, parameters, step, train, differentiated_twice=False):
        return inner.forward_grouped(images, parameters, differentiated_twice)

    def loss(self, task, outputs, labels):
        return task.loss(outputs, labels) * len(outputs)  # the mean over all examples: B tasks' means / B


class Vmapped(PerTask):
    """One task's examples inside torch.vmap over tasks: gradients by torch.func.grad."""
    fresh_leaves = False
    gradients = staticmethod(functional_gradients)

    def forward(self, inner, images, parameters, step, train, differentiated_twice=False):
        return inner.forward(images, parameters, differentiated_twice=differentiated_twice)


PER_TASK, GROUPED, VMAPPED = PerTask(), Grouped(), Vmapped()
