"""Model-Agnostic Meta-Learning (Finn et al., 2017) and its family: the course's program
(the algorithms: fewshot/algorithms/maml.py and reptile.py).

    python maml.py --inner_lr 0.4                    # 5-way 1-shot on Omniglot
    python maml.py --dataset sinusoid                # Finn et al.'s sinusoid regression
    python maml.py --dataset metabolism              # 2-way 5-shot TDC metabolism tasks
    python maml.py --algorithm reptile --num_inner_steps 5 --inner_lr 0.1
    python maml.py --test --log_dir D --checkpoint_step S

`MAML` is the course's learner, and its graded `_inner_loop` and `_outer_step` are what trains.
"""
import statistics

import torch

from fewshot import cli, registry
from fewshot.algorithms import maml
from fewshot.errors import run_cli

PROGRAM = registry.program('maml.py')


class MAML(maml.MAML):
    """The course's MAML learner: its graded _inner_loop and _outer_step are what
    `python maml.py` trains, validates and tests through. The library (fewshot/algorithms/maml.py)
    gives it the meta-parameters, the inner loop's step and what the training loop needs."""

    def _inner_loop(self, images, labels, train):
        """The course's inner loop: adapt the meta-parameters to one task's support set.

        The steps phi <- phi - alpha * grad L_support(phi) are InnerLoop.adapt (fewshot/algorithms/
        inner_loop.py: torch.autograd.grad, with create_graph for second-order MAML).

        Args:
            images: (N*K, 1, 28, 28) support images; labels: (N*K,).
            train: build the graph for the meta-gradient (second-order unless
                first_order); with False nothing returned requires grad.
        Returns:
            parameters: dict of adapted parameters.
            accuracies: support accuracy (MSE for regression) before each step and after the last (L+1 floats).
            gradients: the L dicts of inner-loop gradients.
        """
        history, accuracies, gradients = self.inner.adapt(images, labels, create_graph=train and self.second_order,
                                                          train=train)
        return history[-1], accuracies.tolist(), gradients

    def _outer_step(self, task_batch, train):
        """The course's outer step: adapt to each task's support set (_inner_loop), score the
        adapted parameters on its query set.

        Returns:
            (mean query loss, pre-adapt support accuracy, post-adapt support accuracy,
            post-adapt query accuracy), means over tasks (for regression: MSEs).
        """
        outer_losses, pre_adapt_support, post_adapt_support, post_adapt_query = [], [], [], []
        for images_support, labels_support, images_query, labels_query in task_batch:
            parameters, accuracies, _ = self._inner_loop(images_support, labels_support, train)
            with torch.set_grad_enabled(train):
                outputs = self.inner.forward(images_query, parameters, self.inner.num_inner_steps, train)
                outer_losses.append(self.task.loss(outputs, labels_query))
            pre_adapt_support.append(accuracies[0])
            post_adapt_support.append(accuracies[-1])
            post_adapt_query.append(self.task.metric(outputs, labels_query).item())
        return (torch.stack(outer_losses).mean(), statistics.mean(pre_adapt_support),
                statistics.mean(post_adapt_support), statistics.mean(post_adapt_query))


def main(argv=None):
    return cli.main(PROGRAM, argv)


if __name__ == '__main__':
    run_cli(main)
