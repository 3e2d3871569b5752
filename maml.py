"""Model-Agnostic Meta-Learning (Finn et al., 2017) and its family: the course's program
(the algorithms: fewshot/algorithms/maml.py and reptile.py).

    python maml.py --inner_lr 0.4                    # 5-way 1-shot on Omniglot
    python maml.py --dataset sinusoid                # Finn et al.'s sinusoid regression
    python maml.py --dataset metabolism              # 2-way 5-shot TDC metabolism tasks
    python maml.py --algorithm reptile --num_inner_steps 5 --inner_lr 0.1
    python maml.py --test --log_dir D --checkpoint_step S

`MAML` is the course's learner: the library's with the graded `_inner_loop` and `_outer_step`.
"""
from fewshot import cli, registry
from fewshot.algorithms import maml
from fewshot.errors import run_cli

PROGRAM = registry.program('maml.py')


class MAML(maml.MAML):
    """The library's MAML learner with the course's inner loop and outer step."""

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

    def _outer_step(self, task_batch, train):
        """The course's outer step: (mean query loss, pre-adapt support accuracy,
        post-adapt support accuracy, post-adapt query accuracy), means over tasks."""
        loss, accuracy = self.task_metrics(task_batch, train)
        return (loss, accuracy['pre_adapt_support'].mean().item(), accuracy['post_adapt_support'].mean().item(),
                accuracy['post_adapt_query'].mean().item())


def main(argv=None):
    return cli.main(PROGRAM, argv)


if __name__ == '__main__':
    run_cli(main)
