"""Prototypical Networks (Snell et al., 2017) for few-shot classification: the course's program.

    python protonet.py --num_support 5                      # train 5-way 5-shot on Omniglot
    python protonet.py --dataset metabolism                 # 2-way 5-shot TDC metabolism tasks
    python protonet.py --test --log_dir D --checkpoint_step S --num_support 1

`ProtoNet` is the course's learner: the library's (fewshot/algorithms/protonet.py)
with the graded `_step`.
"""
from fewshot import cli, registry
from fewshot.algorithms import protonet
from fewshot.errors import run_cli

PROGRAM = registry.program('protonet.py')


class ProtoNet(protonet.ProtoNet):
    """The library's ProtoNet learner with the course's step."""

    def _step(self, task_batch):
        """The course's step: (loss, support accuracy, query accuracy), means over tasks."""
        loss, accuracy = self.task_metrics(task_batch)
        return loss, accuracy['support'].mean().item(), accuracy['query'].mean().item()


def main(argv=None):
    return cli.main(PROGRAM, argv)


if __name__ == '__main__':
    run_cli(main)
