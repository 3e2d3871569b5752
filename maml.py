"""Model-Agnostic Meta-Learning (Finn et al., 2017) and its family: the course's program.

    python maml.py --inner_lr 0.4                    # 5-way 1-shot on Omniglot
    python maml.py --dataset sinusoid                # Finn et al.'s sinusoid regression
    python maml.py --dataset metabolism              # 2-way 5-shot TDC metabolism tasks
    python maml.py --algorithm reptile --num_inner_steps 5 --inner_lr 0.1
    python maml.py --test --log_dir D --checkpoint_step S

`MAML._inner_loop` and `MAML._outer_step` are the course's MAML, and what trains, validates and
tests: edit them and your edit runs. With --fast the library's implementation
(fewshot/algorithms/maml.py) may adapt a meta-batch's tasks at once instead, tested equal to these.
"""
import torch

from fewshot import cli, registry
from fewshot.algorithms import maml, reptile
from fewshot.errors import run_cli

PROGRAM = registry.program('maml.py')


class MAML(maml.MAML):
    """The course's MAML learner. The library gives it the meta-parameters (self.meta_parameters),
    the inner learning rates (self.inner_lr), the network (self.forward) and what the training loop
    needs; before each task it sets self.second_order and self.step_weights (fewshot/algorithms/maml.py)."""

    def _inner_loop(self, images, labels, train, every_step=False):
        """Adapt the meta-parameters to one task's support set by L steps of gradient descent,
        phi <- phi - alpha * grad L_support(phi).

        Args:
            images: (N*K, ...) support examples; labels: (N*K,) (regression: (N*K, 1) targets).
            train: build the graph of the adaptation for the meta-gradient: through the inner
                gradients too (second-order) when self.second_order, else first-order. With
                False nothing returned requires grad.
            every_step: return the parameters after every inner step (the multi-step loss).
        Returns:
            parameters: dict of adapted parameters (every_step: a list of L such dicts).
            accuracies: support accuracy (MSE for regression) before each step and after the last (L+1 floats).
            gradients: the L dicts of inner-loop gradients.
        """
        parameters = dict(self.meta_parameters)
        if not train:  # evaluation: no graph back to the meta-parameters
            parameters = {k: v.detach() for k, v in parameters.items()}
        steps, accuracies, gradients, squares = [], [], [], {}
        for step in range(self.num_inner_steps):
            if not train:  # each step's adapted tensors are leaves to differentiate by
                parameters = {k: v.detach().requires_grad_(k in self.adapted_keys) for k, v in parameters.items()}
            adapted = self.adapted_keys  # every tensor; the head alone with --anil
            second_order = train and self.second_order
            with torch.enable_grad():  # at evaluation too
                outputs = self.forward(images, parameters, step, train, differentiated_twice=second_order)
                loss = self.task.loss(outputs, labels)
                grads = torch.autograd.grad(loss, [parameters[k] for k in adapted], create_graph=second_order)
            accuracies.append(self.task.metric(outputs, labels).item())
            gradients.append(dict(zip(adapted, grads)))
            parameters = dict(parameters)
            for k, grad in zip(adapted, grads):
                if self.variants.inner_optimizer == 'adagrad':  # --inner_optimizer adagrad: a per-tensor step size
                    squares[k] = squares.get(k, 0) + grad.square()
                    grad = grad / torch.sqrt(squares[k] + self.variants.inner_adagrad_eps)
                parameters[k] = parameters[k] - self.inner_lr(k, step) * grad  # alpha: fixed, or learned
            if not train:
                parameters, squares = ({k: v.detach() for k, v in d.items()} for d in (parameters, squares))
            steps.append(parameters)
        with torch.no_grad():
            accuracies.append(self.task.metric(self.forward(images, parameters, self.num_inner_steps, train),
                                               labels).item())
        return (steps if every_step else parameters), accuracies, gradients

    def _outer_step(self, task_batch, train):
        """Adapt to each task's support set (_inner_loop) and score the adapted parameters on its
        query set.

        With --multi_step_loss (self.step_weights set), each task's loss is the weighted sum of its
        query losses after every inner step (MAML++).

        Returns:
            (mean query loss, pre-adapt support accuracy, post-adapt support accuracy,
            post-adapt query accuracy), means over tasks (for regression: MSEs).
        """
        outer_losses, pre_adapt_support, post_adapt_support, post_adapt_query = [], [], [], []
        last = self.num_inner_steps
        for images_support, labels_support, images_query, labels_query in task_batch:
            if self.step_weights is None:
                parameters, accuracies, _ = self._inner_loop(images_support, labels_support, train)
                with torch.set_grad_enabled(train):
                    outputs = self.forward(images_query, parameters, last, train)
                    loss = self.task.loss(outputs, labels_query)
            else:
                steps, accuracies, _ = self._inner_loop(images_support, labels_support, train, every_step=True)
                with torch.set_grad_enabled(train):
                    step_losses = [self.task.loss(self.forward(images_query, p, step, train), labels_query)
                                   for step, p in enumerate(steps, start=1)]
                    loss = sum(w * x for w, x in zip(self.step_weights.tolist(), step_losses))
                    outputs = self.forward(images_query, steps[-1], last, train)
            outer_losses.append(loss)
            pre_adapt_support.append(accuracies[0])
            post_adapt_support.append(accuracies[-1])
            post_adapt_query.append(self.task.metric(outputs, labels_query).item())
        count = len(outer_losses)
        return (torch.stack(outer_losses).mean(), sum(pre_adapt_support) / count, sum(post_adapt_support) / count,
                sum(post_adapt_query) / count)


class Reptile(reptile.Reptile, MAML):
    """Reptile's meta-update (fewshot/algorithms/reptile.py), evaluated as this MAML: fine-tuned on
    each support set by _inner_loop, scored on its query set by _outer_step."""


LEARNERS = {'maml': MAML, 'reptile': Reptile}  # the classes this program trains and tests


def main(argv=None):
    return cli.main(PROGRAM, argv, LEARNERS)


if __name__ == '__main__':
    run_cli(main)
