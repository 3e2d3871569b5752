"""Prototypical Networks (Snell et al., 2017) for few-shot classification: the course's program.

    python protonet.py --num_support 5                      # train 5-way 5-shot on Omniglot
    python protonet.py --dataset metabolism                 # 2-way 5-shot TDC metabolism tasks
    python protonet.py --test --log_dir D --checkpoint_step S --num_support 1

`ProtoNet` is the course's learner, and its graded `_step` is what trains.
"""
from fewshot import cli, registry
from fewshot.algorithms import protonet
from fewshot.errors import run_cli

PROGRAM = registry.program('protonet.py')


class ProtoNet(protonet.GradedProtoNet):
    """The course's ProtoNet learner: its graded _step is what `python protonet.py` trains,
    validates and tests through. The library (fewshot/algorithms/protonet.py) gives it the encoder
    and task_metrics, the prototypes and distances of a batch of tasks."""

    def _step(self, task_batch):
        """The course's step: (loss, support accuracy, query accuracy), means over tasks.

        task_metrics embeds each task's support and query images, averages each class's support
        embeddings into a prototype and scores every example by its negative squared distances
        to them: (mean query cross-entropy, {'support': (B,), 'query': (B,)} accuracies)."""
        loss, accuracy = self.task_metrics(task_batch)
        return loss, accuracy['support'].mean().item(), accuracy['query'].mean().item()


def main(argv=None):
    return cli.main(PROGRAM, argv)


if __name__ == '__main__':
    run_cli(main)
