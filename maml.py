"""Model-Agnostic Meta-Learning (Finn et al., 2017) and its family, for few-shot
classification (Omniglot) and regression (sinusoids):

- second-order MAML, first-order (--first_order), multi-step inner loops;
- learned inner learning rates per parameter tensor (--learn_inner_lrs,
  Meta-SGD per tensor) or per tensor and step (--learn_inner_lrs_per_step, LSLR);
- an Adagrad inner optimizer (--inner_optimizer adagrad);
- MAML++ training tricks (Antoniou et al., 2019): derivative-order annealing,
  multi-step loss, cosine outer learning rate;
- ANIL (--anil: only the head adapts in the inner loop);
- Reptile (Nichol et al., 2018; --algorithm reptile).

    python maml.py --inner_lr 0.4                    # 5-way 1-shot on Omniglot
    python maml.py --dataset sinusoid                # Finn et al.'s sinusoid regression
    python maml.py --test --log_dir D --checkpoint_step S
"""
import argparse
import dataclasses
import math
import os

import torch
import torch.nn.functional as F

import networks
import omniglot
import sinusoid
import training
import util


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
    num_train_iterations: int = 1  # the run's length, for the MSL and cosine schedules

    @classmethod
    def from_args(cls, args):
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)})


class MAML:
    """A MAML learner: meta-parameters, inner learning rates, and the outer Adam."""

    key_metric = 'post_adapt_query'

    def __init__(self, num_way, num_inner_steps=1, inner_lr=0.4, learn_inner_lrs=False, outer_lr=0.001,
                 first_order=False, num_hidden_channels=64, device='cpu', vmap_tasks=None, dtype=torch.float32,
                 params=None, forward=networks.conv_net, regression=False, variants=None):
        """vmap_tasks: adapt the tasks of a meta-batch with torch.vmap (True) or in a
        loop (False); None picks the measured faster one for the device.
        params, forward: another network, forward(params, x, fused_bn=...) -> (M, outputs),
        with its initial params; by default the 4-block conv net on 28x28 images.
        regression: MSE loss and per-task MSE metrics instead of cross-entropy and accuracy."""
        self.device = torch.device(device)
        self.num_way = num_way
        self.num_inner_steps = num_inner_steps
        self.first_order = first_order
        self.outer_lr = outer_lr
        self.variants = variants or Variants()
        self.regression = regression
        self.metric_kind = 'loss' if regression else 'accuracy'
        self.vmap_tasks = self.device.type != 'cpu' if vmap_tasks is None else vmap_tasks
        if params is None:
            params = networks.init_conv_params(4, 1, num_hidden_channels, num_outputs=num_way, dtype=dtype)
        self._network = forward
        if self.variants.per_step_bn:
            params = self._init_per_step_bn(params)
        self._meta_parameters = {k: v.to(self.device).requires_grad_() for k, v in params.items()}
        self._adapted_keys = [k for k in params if self._adapts(k)]
        per_step = self.variants.learn_inner_lrs_per_step
        self.learn_inner_lrs = learn_inner_lrs or per_step
        lr_shape = (num_inner_steps,) if per_step else ()
        self._inner_lrs = {k: torch.full(lr_shape, inner_lr, dtype=dtype, device=self.device,
                                         requires_grad=self.learn_inner_lrs) for k in self._adapted_keys}
        trained = list(self._meta_parameters.values())
        if self.learn_inner_lrs:
            trained += list(self._inner_lrs.values())
        self.optimizer = torch.optim.Adam(trained, lr=outer_lr)

    # ------------------------------------------------------------ pieces

    def _adapts(self, key):
        """Whether the inner loop updates this tensor: the head always; the body unless
        ANIL; per-step batch-norm rows never (they are meta-learned only)."""
        if key.startswith('head'):
            return True
        return not self.variants.anil and not (self.variants.per_step_bn and key.startswith('bn'))

    def _init_per_step_bn(self, params):
        """MAML++ BNWB + BNRS: each BN weight and bias becomes (L+1, C), one row per inner
        step and one for the adapted pass, and each row has running statistics, updated
        while meta-training and used instead of batch statistics when evaluating."""
        blocks = sorted(k for k in params if k.startswith('bn') and k.endswith('_weight'))
        if not blocks:
            raise util.UserError('--per_step_bn needs a network with batch norm (not --dataset sinusoid)')
        rows = self.num_inner_steps + 1
        self.vmap_tasks = False  # running statistics are updated in place: per-task loop only
        like = {'dtype': params[blocks[0]].dtype, 'device': self.device}
        self._bn_running = [[(torch.zeros(params[k].shape[0], **like), torch.ones(params[k].shape[0], **like))
                             for k in blocks] for _ in range(rows)]
        return {k: v.expand(rows, *v.shape).clone() if k.startswith('bn') else v for k, v in params.items()}

    def _forward(self, images, parameters, step=0, train=False):
        """(M, ...) examples of one task -> (M, outputs) under the given parameters.
        --per_step_bn: step picks the batch-norm row; train normalises with the batch's
        statistics and updates the running ones, else the running ones are used."""
        if not self.variants.per_step_bn:
            return self._network(parameters, images, fused_bn=not self.vmap_tasks)
        row = min(step, len(self._bn_running) - 1)

        def norm(x, i):
            mean, var = self._bn_running[row][i]
            return F.batch_norm(x, mean, var, parameters[f'bn{i}_weight'][row], parameters[f'bn{i}_bias'][row],
                                training=train, momentum=0.1, eps=networks.BN_EPS)
        return self._network(parameters, images, norm=norm)

    def _loss(self, outputs, targets):
        """Mean loss over the leading dims: (..., M, C) outputs, (..., M) labels or (..., M, C) targets."""
        if self.regression:
            return F.mse_loss(outputs, targets)
        return F.cross_entropy(outputs.flatten(0, -2), targets.flatten())

    def _metric(self, outputs, targets):
        """Per-task accuracy, or MSE for regression: (..., M, C) -> (...), detached."""
        if self.regression:
            return (outputs.detach() - targets).square().flatten(-2).mean(-1)
        return util.task_accuracy(outputs.detach(), targets)

    def _inner_lr(self, key, step):
        """The inner LR of a tensor at an inner step (LSLR: its own; past the trained steps: the last)."""
        lr = self._inner_lrs[key]
        return lr[min(step, lr.shape[0] - 1)] if lr.dim() else lr

    def _inner_update(self, parameters, grads, squares, step):
        """One inner step on the adapted tensors: SGD, or Adagrad with squares = running sums of g^2."""
        parameters, squares = dict(parameters), dict(squares)
        for k in self._adapted_keys:
            direction = grads[k]
            if self.variants.inner_optimizer == 'adagrad':
                squares[k] = squares.get(k, 0) + direction.square()
                direction = direction / torch.sqrt(squares[k] + self.variants.inner_adagrad_eps)
            parameters[k] = parameters[k] - self._inner_lr(k, step) * direction
        return parameters, squares

    def _second_order_at(self, step):
        """Whether the meta-gradient at outer step `step` is second-order."""
        return not self.first_order and step >= self.variants.anneal_derivative_order

    def _multi_step_weights(self, step):
        """MSL weights of the query losses after inner steps 1..L at outer step `step`:
        uniform at first, annealed linearly over the first 10% of the run so that
        each non-final step keeps 0.03 / L and the last step the rest."""
        num_steps = self.num_inner_steps
        progress = min(step / max(1, self.variants.num_train_iterations // 10), 1.0)
        weights = torch.full((num_steps,), (1 - progress) / num_steps + progress * 0.03 / num_steps)
        weights[-1] = 1 - weights[:-1].sum()
        return weights

    # ------------------------------------------------------------ the inner loop

    def _adapt(self, images, labels, create_graph, train):
        """Adapt to one task's support set.

        Returns:
            history: L+1 parameter dicts, the meta-parameters then after each inner step.
            metrics: L+1 support metrics (0-d tensors), before each step and after the last.
            gradients: the L dicts of inner-loop gradients of the adapted tensors.
        """
        parameters = self._meta_parameters if train else {k: v.detach() for k, v in self._meta_parameters.items()}
        history, metrics, gradients, squares = [parameters], [], [], {}
        for step in range(self.num_inner_steps):
            if not train:
                parameters = {k: v.detach().requires_grad_(k in self._adapted_keys) for k, v in parameters.items()}
            with torch.enable_grad():
                outputs = self._forward(images, parameters, step, train)
                grads = torch.autograd.grad(self._loss(outputs, labels), [parameters[k] for k in self._adapted_keys],
                                            create_graph=create_graph)
            grads = dict(zip(self._adapted_keys, grads))
            metrics.append(self._metric(outputs, labels))
            gradients.append(grads)
            parameters, squares = self._inner_update(parameters, grads, squares, step)
            if not train:
                parameters = {k: v.detach() for k, v in parameters.items()}
                squares = {k: v.detach() for k, v in squares.items()}
            history.append(parameters)
        with torch.no_grad():
            metrics.append(self._metric(self._forward(images, parameters, self.num_inner_steps, train), labels))
        return history, metrics, gradients

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
        history, metrics, gradients = self._adapt(images, labels, train and not self.first_order, train)
        return history[-1], [m.item() for m in metrics], gradients

    def _adapt_vmapped(self, images, labels, create_graph, train):
        """_adapt for a batch of tasks at once with torch.func.

        Args: images (B, N*K, ...), labels (B, N*K).
        Returns: history (L+1 dicts of (B, *shape) parameters) and (B, L+1) support metrics.
        """
        meta = self._meta_parameters

        def support_loss(adapted, fixed, x, y):
            outputs = self._forward(x, {**fixed, **adapted})
            return self._loss(outputs, y), outputs

        def adapt(x, y):
            parameters, squares, history, metrics = meta, {}, [meta], []
            for step in range(self.num_inner_steps):
                adapted = {k: parameters[k] for k in self._adapted_keys}
                fixed = {k: v for k, v in parameters.items() if k not in adapted}
                grads, outputs = torch.func.grad(support_loss, has_aux=True)(adapted, fixed, x, y)
                if not create_graph:
                    grads = {k: g.detach() for k, g in grads.items()}
                metrics.append(self._metric(outputs, y))
                parameters, squares = self._inner_update(parameters, grads, squares, step)
                history.append(parameters)
            metrics.append(self._metric(self._forward(x, parameters), y))
            return history, torch.stack(metrics)

        with torch.set_grad_enabled(train):
            return torch.vmap(adapt)(images, labels)

    # ------------------------------------------------------------ the outer loop

    def _task_metrics(self, task_batch, train, second_order=None, loss_weights=None):
        """The outer loss and (B,) per-task metrics.

        second_order: None follows first_order. loss_weights: (L,) weights of the
        query losses after inner steps 1..L (MSL); None: the last step only (eq. 9).
        """
        if not self.regression and task_batch.labels_support.max() >= self.num_way:
            raise util.UserError(f'tasks have more classes than the {self.num_way}-way head this MAML was '
                                 f'trained with; use --num_way {self.num_way}')
        create_graph = train and (not self.first_order if second_order is None else second_order)
        images_query, labels_query = task_batch.images_query, task_batch.labels_query
        if self.vmap_tasks:
            history, support = self._adapt_vmapped(task_batch.images_support, task_batch.labels_support,
                                                   create_graph, train)

            def query_outputs(step):
                return torch.vmap(self._forward)(images_query, history[step])
        else:
            adapted = [self._adapt(x, y, create_graph, train)
                       for x, y in zip(task_batch.images_support, task_batch.labels_support)]
            support = torch.stack([torch.stack(metrics) for _, metrics, _ in adapted])

            def query_outputs(step):
                return torch.stack([self._forward(x, history[step], step, train)
                                    for x, (history, _, _) in zip(images_query, adapted)])
        last = self.num_inner_steps
        with torch.set_grad_enabled(train):
            final = query_outputs(last)
            loss = self._loss(final, labels_query)
            if loss_weights is not None and last > 1:
                loss = loss_weights[-1] * loss + sum(
                    weight * self._loss(query_outputs(step), labels_query)
                    for step, weight in enumerate(loss_weights[:-1].tolist(), start=1))
        metrics = {'pre_adapt_support': support[:, 0], 'post_adapt_support': support[:, -1],
                   'post_adapt_query': self._metric(final, labels_query)}
        if self.regression:
            with torch.no_grad():
                metrics['pre_adapt_query'] = self._metric(query_outputs(0), labels_query)
        return loss, metrics

    def _outer_step(self, task_batch, train):
        """The course's outer step: (mean query loss, pre-adapt support accuracy,
        post-adapt support accuracy, post-adapt query accuracy), means over tasks."""
        loss, accuracy = self._task_metrics(task_batch, train)
        return (loss, accuracy['pre_adapt_support'].mean().item(), accuracy['post_adapt_support'].mean().item(),
                accuracy['post_adapt_query'].mean().item())

    def _outer_lr_at(self, step):
        if not self.variants.cosine_outer_lr:
            return self.outer_lr
        return 0.5 * self.outer_lr * (1 + math.cos(math.pi * step / self.variants.num_train_iterations))

    def train_step(self, task_batch, step):
        for group in self.optimizer.param_groups:
            group['lr'] = self._outer_lr_at(step)
        self.optimizer.zero_grad(set_to_none=True)
        weights = self._multi_step_weights(step) if self.variants.multi_step_loss else None
        loss, metrics = self._task_metrics(task_batch, train=True, second_order=self._second_order_at(step),
                                           loss_weights=weights)
        loss.backward()
        self.optimizer.step()
        return {'loss': loss.item(), **{k: v.mean().item() for k, v in metrics.items()}}

    def evaluate(self, task_batch):
        loss, metrics = self._task_metrics(task_batch, train=False)
        return {'loss': loss.detach().expand(len(task_batch)), **metrics}

    def extra_scalars(self):
        """TensorBoard scalars beyond the metrics: learned inner LRs, a scheduled outer LR."""
        scalars = {}
        if self.learn_inner_lrs:
            for k, v in self._inner_lrs.items():
                scalars.update({f'inner_lr/{k}' + (f'/step{s}' if v.dim() else ''): x
                                for s, x in enumerate(v.detach().reshape(-1).tolist())})
        if self.variants.cosine_outer_lr:
            scalars['outer_lr'] = self.optimizer.param_groups[0]['lr']
        return scalars

    def state(self):
        state = {'meta_parameters': {k: v.detach().cpu() for k, v in self._meta_parameters.items()},
                 'inner_lrs': {k: v.detach().cpu() for k, v in self._inner_lrs.items()},
                 'optimizer': self.optimizer.state_dict()}
        if self.variants.per_step_bn:
            state['bn_running'] = [[(m.cpu(), v.cpu()) for m, v in row] for row in self._bn_running]
        return state

    def load_state(self, state):
        rows = [v.shape[0] for k, v in state['meta_parameters'].items() if self.variants.per_step_bn and k[:2] == 'bn']
        if rows and rows[0] != len(self._bn_running):
            raise util.UserError(f'this --per_step_bn model has batch-norm rows for {rows[0] - 1} inner steps; '
                                 f'test it with --num_inner_steps {rows[0] - 1}')
        with torch.no_grad():
            for k, v in state['meta_parameters'].items():
                self._meta_parameters[k].copy_(v)
            for k, v in state['inner_lrs'].items():
                self._inner_lrs[k].copy_(v)
            for row, saved in zip(getattr(self, '_bn_running', []), state.get('bn_running', [])):
                for (mean, var), (saved_mean, saved_var) in zip(row, saved):
                    mean.copy_(saved_mean)
                    var.copy_(saved_var)
        self.optimizer.load_state_dict(state['optimizer'])


class Reptile(MAML):
    """Reptile (Nichol et al., 2018): per task, num_inner_steps SGD (or Adagrad)
    steps on all of the task's examples, then theta <- theta + epsilon *
    mean_i(phi_i - theta), with epsilon annealed linearly from outer_lr to 0.
    Evaluation is MAML's: fine-tune on the support set, score the query set.
    Training logs the metric on the task's examples before and after adapting
    (pre_adapt_train, post_adapt_train) and the loss after adapting."""

    def train_step(self, task_batch, step):
        epsilon = self.outer_lr * (1 - step / self.variants.num_train_iterations)
        meta = self._meta_parameters
        moves = {k: torch.zeros_like(v) for k, v in meta.items()}
        before, after, losses = [], [], []
        for images_support, labels_support, images_query, labels_query in task_batch:
            images = torch.cat([images_support, images_query])
            labels = torch.cat([labels_support, labels_query])
            history, metrics, _ = self._adapt(images, labels, create_graph=False, train=False)
            for k in moves:
                moves[k] += history[-1][k] - meta[k].detach()
            before.append(metrics[0])
            after.append(metrics[-1])
            with torch.no_grad():
                losses.append(self._loss(self._forward(images, history[-1]), labels))
        with torch.no_grad():
            for k, v in meta.items():
                v.add_(moves[k], alpha=epsilon / len(task_batch))
        self.meta_step_size = epsilon
        return {'loss': torch.stack(losses).mean().item(), 'pre_adapt_train': torch.stack(before).mean().item(),
                'post_adapt_train': torch.stack(after).mean().item()}

    def extra_scalars(self):
        return {**super().extra_scalars(), 'meta_step_size': getattr(self, 'meta_step_size', self.outer_lr)}


# ---------------------------------------------------------------- command line

DATASET_DEFAULTS = {  # flags whose defaults depend on --dataset (Finn et al.'s sinusoid settings)
    'omniglot': dict(num_way=5, num_support=[1], num_query=15, batch_size=16, inner_lr=0.4),
    'sinusoid': dict(num_way=1, num_support=[10], num_query=10, batch_size=25, inner_lr=0.01),
}
NEW_FLAG_DEFAULTS = {'first_order': False, 'num_hidden_channels': 64, 'augment_rotations': False,
                     'inner_optimizer': 'sgd', 'learn_inner_lrs_per_step': False, 'anil': False,
                     'anneal_derivative_order': 0, 'multi_step_loss': False, 'cosine_outer_lr': False,
                     'per_step_bn': False}


def default_log_dir(args):
    algorithm, dataset = getattr(args, 'algorithm', 'maml'), getattr(args, 'dataset', 'omniglot')
    name = (f'./logs/{algorithm}/{dataset}.way_{args.num_way}.support_{args.num_support}.query_{args.num_query}'
            f'.inner_steps_{args.num_inner_steps or 1}.inner_lr_{args.inner_lr}.learn_inner_lrs_{args.learn_inner_lrs}'
            f'.outer_lr_{args.outer_lr}.batch_size_{args.batch_size}')
    name += ''.join(f'.{k}_{getattr(args, k)}' for k, v in NEW_FLAG_DEFAULTS.items() if getattr(args, k, v) != v)
    if getattr(args, 'inner_optimizer', 'sgd') == 'adagrad':
        name += f'.eps_{args.inner_adagrad_eps}'
    return name


def add_inner_loop_args(parser, inner_lr=0.4):
    """The inner-loop flags shared by maml.py and run_metabolism.py."""
    parser.add_argument('--num_inner_steps', type=int, default=None,
                        help='inner-loop steps (default 1; at --test: as trained)')
    parser.add_argument('--inner_lr', type=float, default=inner_lr, help='inner-loop learning rate (initial if learned)')
    parser.add_argument('--learn_inner_lrs', default=False, action='store_true',
                        help='learn one inner learning rate per parameter tensor')
    parser.add_argument('--first_order', default=False, action='store_true', help='first-order MAML (FOMAML)')
    parser.add_argument('--vmap_tasks', choices=['auto', 'yes', 'no'], default='auto',
                        help='adapt the tasks of a meta-batch with torch.vmap; auto: no on CPU, yes on GPU')


def add_variant_args(parser):
    """The flags of Variants (MAML++, Adagrad inner loop, ANIL)."""
    parser.add_argument('--inner_optimizer', choices=['sgd', 'adagrad'], default='sgd')
    parser.add_argument('--inner_adagrad_eps', type=float, default=0.7, help='Adagrad inner eps (the NTU report: 0.7)')
    parser.add_argument('--learn_inner_lrs_per_step', default=False, action='store_true',
                        help='LSLR: learn an inner LR per parameter tensor and inner step')
    parser.add_argument('--anil', default=False, action='store_true', help='adapt only the head in the inner loop')
    parser.add_argument('--anneal_derivative_order', type=int, default=0, metavar='N',
                        help='first-order for the first N outer steps, second-order after')
    parser.add_argument('--multi_step_loss', default=False, action='store_true',
                        help='MSL: query losses after every inner step, annealed towards the last')
    parser.add_argument('--cosine_outer_lr', default=False, action='store_true',
                        help='cosine annealing of the outer LR over the run')
    parser.add_argument('--per_step_bn', default=False, action='store_true',
                        help='per-step BN weights, biases and running statistics (used at evaluation)')


def check_inner_loop_args(args):
    """Validate the inner-loop flags; default --num_inner_steps to 1 for training."""
    if args.num_inner_steps is not None and args.num_inner_steps < 1:
        raise util.UserError('--num_inner_steps must be at least 1')
    if not args.test and args.num_inner_steps is None:
        args.num_inner_steps = 1
    if args.inner_lr <= 0:
        raise util.UserError('--inner_lr must be positive')


def vmap_choice(args):
    """--vmap_tasks as MAML's vmap_tasks argument."""
    return {'auto': None, 'yes': True, 'no': False}[getattr(args, 'vmap_tasks', 'auto')]


def build_learner(args, device):
    regression = getattr(args, 'dataset', 'omniglot') == 'sinusoid'
    params, forward = (sinusoid.init_params(), sinusoid.forward) if regression else (None, networks.conv_net)
    learner_class = Reptile if getattr(args, 'algorithm', 'maml') == 'reptile' else MAML
    return learner_class(args.num_way, args.num_inner_steps, args.inner_lr, args.learn_inner_lrs, args.outer_lr,
                         args.first_order, args.num_hidden_channels, device, vmap_choice(args), params=params,
                         forward=forward, regression=regression, variants=Variants.from_args(args))


def build_sampler(split, args, seed, device):
    if args.dataset == 'sinusoid':
        return sinusoid.build_sampler(split, args, seed, device)
    return omniglot.build_sampler(split, args, seed, device)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train or test MAML (or Reptile) on Omniglot or sinusoids.')
    parser.add_argument('--algorithm', choices=['maml', 'reptile'], default='maml')
    parser.add_argument('--dataset', choices=['omniglot', 'sinusoid'], default='omniglot')
    training.add_common_args(parser, num_train_iterations=15000)
    add_inner_loop_args(parser)
    add_variant_args(parser)
    parser.add_argument('--outer_lr', type=float, default=None,
                        help='outer-loop Adam learning rate (default 0.001); Reptile: initial meta step size '
                             '(default 1.0)')
    parser.add_argument('--num_hidden_channels', type=int, default=64, help='channels of each conv block')
    omniglot.add_args(parser)
    known, _ = parser.parse_known_args(argv)
    parser.set_defaults(**DATASET_DEFAULTS[known.dataset])
    args = training.parse_checked(parser, argv)
    if args.outer_lr is None:
        args.outer_lr = 1.0 if args.algorithm == 'reptile' else 0.001
    return args


def main(argv=None):
    args = parse_args(argv)
    check_inner_loop_args(args)
    if args.outer_lr <= 0:
        raise util.UserError('--outer_lr must be positive')
    if args.inner_adagrad_eps <= 0:
        raise util.UserError('--inner_adagrad_eps must be positive')
    if args.algorithm == 'reptile' and (args.learn_inner_lrs or args.learn_inner_lrs_per_step or args.first_order
                                        or args.multi_step_loss or args.anneal_derivative_order or args.per_step_bn):
        raise util.UserError('--algorithm reptile takes no meta-gradient options (--learn_inner_lrs*, --first_order, '
                             '--multi_step_loss, --anneal_derivative_order, --per_step_bn); drop them')
    return training.run(args, args.log_dir or default_log_dir(args), build_learner, build_sampler,
                        after_test=plot_sinusoid_task if args.dataset == 'sinusoid' else None)


def plot_sinusoid_task(learner, args, log_dir):
    path = os.path.join(log_dir, 'sinusoid_task.png')
    sinusoid.plot_task(learner, path, args.num_support, args.seed)
    print(f'one test task drawn in {path}')


if __name__ == '__main__':
    util.run_cli(main)
