"""Model-Agnostic Meta-Learning (Finn et al., 2017) for few-shot classification:
second-order, first-order (--first_order), learned per-parameter inner
learning rates (--learn_inner_lrs, Li et al.'s Meta-SGD per tensor) and
multi-step inner loops.

    python maml.py --inner_lr 0.4                    # 5-way 1-shot on Omniglot
    python maml.py --test --log_dir D --checkpoint_step S
"""
import argparse

import torch
import torch.nn.functional as F

import networks
import omniglot
import training
import util


class MAML:
    """A MAML learner: meta-parameters, inner learning rates, and the outer Adam."""

    key_metric = 'post_adapt_query'
    metric_kind = 'accuracy'

    def __init__(self, num_way, num_inner_steps=1, inner_lr=0.4, learn_inner_lrs=False, outer_lr=0.001,
                 first_order=False, num_hidden_channels=64, device='cpu', vmap_tasks=None, dtype=torch.float32,
                 params=None, forward=networks.conv_net):
        """vmap_tasks: adapt the tasks of a meta-batch with torch.vmap (True) or in a
        loop (False); None picks the measured faster one for the device.
        params, forward: another network, forward(params, x, fused_bn=...) -> (M, num_way)
        logits, with its initial params; by default the 4-block conv net on 28x28 images."""
        self.device = torch.device(device)
        self.num_way = num_way
        self.num_inner_steps = num_inner_steps
        self.first_order = first_order
        self.learn_inner_lrs = learn_inner_lrs
        self.vmap_tasks = self.device.type != 'cpu' if vmap_tasks is None else vmap_tasks
        if params is None:
            params = networks.init_conv_params(4, 1, num_hidden_channels, num_outputs=num_way, dtype=dtype)
        self._network = forward
        self._meta_parameters = {k: v.to(self.device).requires_grad_() for k, v in params.items()}
        self._inner_lrs = {k: torch.tensor(inner_lr, dtype=dtype, device=self.device, requires_grad=learn_inner_lrs)
                           for k in self._meta_parameters}
        trained = list(self._meta_parameters.values())
        if learn_inner_lrs:
            trained += list(self._inner_lrs.values())
        self.optimizer = torch.optim.Adam(trained, lr=outer_lr)

    def _forward(self, images, parameters):
        """(M, ...) examples of one task -> (M, num_way) logits under the given parameters."""
        return self._network(parameters, images, fused_bn=not self.vmap_tasks)

    def _inner_loop(self, images, labels, train):
        """Adapt the meta-parameters to one task's support set.

        Args:
            images: (N*K, 1, 28, 28) support images; labels: (N*K,).
            train: build the graph for the meta-gradient (second-order unless
                first_order); with False nothing returned requires grad.
        Returns:
            parameters: dict of adapted parameters.
            accuracies: support accuracy before each step and after the last (L+1 floats).
            gradients: the L dicts of inner-loop gradients.
        """
        create_graph = train and not self.first_order
        parameters = self._meta_parameters if train else {k: v.detach() for k, v in self._meta_parameters.items()}
        accuracies, gradients = [], []
        for _ in range(self.num_inner_steps):
            if not train:
                parameters = {k: v.requires_grad_() for k, v in parameters.items()}
            with torch.enable_grad():
                logits = self._forward(images, parameters)
                loss = F.cross_entropy(logits, labels)
                grads = torch.autograd.grad(loss, list(parameters.values()), create_graph=create_graph)
            accuracies.append(util.score(logits, labels))
            gradients.append(dict(zip(parameters, grads)))
            parameters = {k: p - self._inner_lrs[k] * g for (k, p), g in zip(parameters.items(), grads)}
            if not train:
                parameters = {k: v.detach() for k, v in parameters.items()}
        with torch.no_grad():
            accuracies.append(util.score(self._forward(images, parameters), labels))
        return parameters, accuracies, gradients

    def _adapt_vmapped(self, images, labels, train):
        """_inner_loop for a batch of tasks at once with torch.func.

        Args: images (B, N*K, 1, 28, 28), labels (B, N*K).
        Returns: adapted parameters, each (B, *shape), and (B, L+1) support accuracies.
        """
        create_graph = train and not self.first_order
        meta, lrs = self._meta_parameters, self._inner_lrs

        def support_loss(parameters, x, y):
            logits = self._forward(x, parameters)
            return F.cross_entropy(logits, y), logits

        def adapt(x, y):
            parameters, accuracies = meta, []
            for _ in range(self.num_inner_steps):
                grads, logits = torch.func.grad(support_loss, has_aux=True)(parameters, x, y)
                if not create_graph:
                    grads = {k: g.detach() for k, g in grads.items()}
                accuracies.append(util.task_accuracy(logits, y))
                parameters = {k: parameters[k] - lrs[k] * grads[k] for k in parameters}
            accuracies.append(util.task_accuracy(self._forward(x, parameters), y))
            return parameters, torch.stack(accuracies)

        with torch.set_grad_enabled(train):
            return torch.vmap(adapt)(images, labels)

    def _task_metrics(self, task_batch, train):
        """Mean post-adapt query loss (eq. 9) and (B,) per-task accuracies."""
        if task_batch.labels_support.max() >= self.num_way:
            raise util.UserError(f'tasks have more classes than the {self.num_way}-way head this MAML was '
                                 f'trained with; use --num_way {self.num_way}')
        if self.vmap_tasks:
            adapted, support_accuracies = self._adapt_vmapped(task_batch.images_support,
                                                              task_batch.labels_support, train)
            with torch.set_grad_enabled(train):
                query_logits = torch.vmap(self._forward)(task_batch.images_query, adapted)
            losses = F.cross_entropy(query_logits.flatten(0, 1), task_batch.labels_query.flatten(), reduction='none')
            loss = losses.mean()
            query_accuracy = util.task_accuracy(query_logits, task_batch.labels_query)
        else:
            support_accuracies, losses, query_accuracy = [], [], []
            for images_support, labels_support, images_query, labels_query in task_batch:
                adapted, accuracies, _ = self._inner_loop(images_support, labels_support, train)
                with torch.set_grad_enabled(train):
                    logits = self._forward(images_query, adapted)
                    losses.append(F.cross_entropy(logits, labels_query))
                support_accuracies.append(torch.tensor(accuracies))
                query_accuracy.append(util.task_accuracy(logits, labels_query))
            loss = torch.stack(losses).mean()
            support_accuracies = torch.stack(support_accuracies)
            query_accuracy = torch.stack(query_accuracy)
        return loss, {'pre_adapt_support': support_accuracies[:, 0],
                      'post_adapt_support': support_accuracies[:, -1],
                      'post_adapt_query': query_accuracy.detach()}

    def _outer_step(self, task_batch, train):
        """The course's outer step: (mean query loss, pre-adapt support accuracy,
        post-adapt support accuracy, post-adapt query accuracy), means over tasks."""
        loss, accuracy = self._task_metrics(task_batch, train)
        return (loss, accuracy['pre_adapt_support'].mean().item(), accuracy['post_adapt_support'].mean().item(),
                accuracy['post_adapt_query'].mean().item())

    def train_step(self, task_batch, step):
        self.optimizer.zero_grad(set_to_none=True)
        loss, accuracy = self._task_metrics(task_batch, train=True)
        loss.backward()
        self.optimizer.step()
        return {'loss': loss.item(), **{k: v.mean().item() for k, v in accuracy.items()}}

    def evaluate(self, task_batch):
        loss, accuracy = self._task_metrics(task_batch, train=False)
        return {'loss': loss.detach().expand(len(task_batch)), **accuracy}

    def extra_scalars(self):
        """TensorBoard scalars beyond the metrics: the learned inner learning rates."""
        if not self.learn_inner_lrs:
            return {}
        return {f'inner_lr/{k}': v.item() for k, v in self._inner_lrs.items()}

    def state(self):
        return {'meta_parameters': {k: v.detach().cpu() for k, v in self._meta_parameters.items()},
                'inner_lrs': {k: v.detach().cpu() for k, v in self._inner_lrs.items()},
                'optimizer': self.optimizer.state_dict()}

    def load_state(self, state):
        with torch.no_grad():
            for k, v in state['meta_parameters'].items():
                self._meta_parameters[k].copy_(v)
            for k, v in state['inner_lrs'].items():
                self._inner_lrs[k].copy_(v)
        self.optimizer.load_state_dict(state['optimizer'])


NEW_FLAG_DEFAULTS = {'first_order': False, 'num_hidden_channels': 64, 'augment_rotations': False}


def default_log_dir(args):
    name = (f'./logs/maml/omniglot.way_{args.num_way}.support_{args.num_support}.query_{args.num_query}'
            f'.inner_steps_{args.num_inner_steps or 1}.inner_lr_{args.inner_lr}.learn_inner_lrs_{args.learn_inner_lrs}'
            f'.outer_lr_{args.outer_lr}.batch_size_{args.batch_size}')
    return name + ''.join(f'.{k}_{getattr(args, k)}' for k, v in NEW_FLAG_DEFAULTS.items() if getattr(args, k) != v)


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
    return MAML(args.num_way, args.num_inner_steps, args.inner_lr, args.learn_inner_lrs, args.outer_lr,
                args.first_order, args.num_hidden_channels, device, vmap_choice(args))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train or test MAML on Omniglot.')
    training.add_common_args(parser, num_train_iterations=15000)
    add_inner_loop_args(parser)
    parser.add_argument('--outer_lr', type=float, default=0.001, help='outer-loop Adam learning rate')
    parser.add_argument('--num_hidden_channels', type=int, default=64, help='channels of each conv block')
    omniglot.add_args(parser)
    return training.parse_checked(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    check_inner_loop_args(args)
    if args.outer_lr <= 0:
        raise util.UserError('--outer_lr must be positive')
    return training.run(args, args.log_dir or default_log_dir(args), build_learner, omniglot.build_sampler)


if __name__ == '__main__':
    util.run_cli(main)
