"""Prototypical Networks (Snell et al., 2017) for few-shot classification: the course's program.

    python protonet.py --num_support 5                      # train 5-way 5-shot on Omniglot
    python protonet.py --dataset metabolism                 # 2-way 5-shot TDC metabolism tasks
    python protonet.py --test --log_dir D --checkpoint_step S --num_support 1

`ProtoNet._step` is the course's step, and what trains, validates and tests: edit it and your
edit runs. With --fast the library's implementation (fewshot/algorithms/protonet.py) scores a
meta-batch at once instead, tested equal to this _step.
"""
import torch
import torch.nn.functional as F

from fewshot import cli, registry
from fewshot.algorithms import protonet
from fewshot.errors import run_cli

PROGRAM = registry.program('protonet.py')


class ProtoNet(protonet.ProtoNet):
    """The course's ProtoNet learner. The library gives it the encoder (self.embeddings) and what
    the training loop needs; the step is here."""

    def _step(self, task_batch):
        """The ProtoNet step on a batch of tasks: the loss and the accuracies, means over the tasks.

        Each task's support examples are embedded and averaged per class into prototypes; every
        example is scored by its negative squared Euclidean distances to them (--metric cosine:
        its cosine similarities to them times a learned scale), and the loss is the cross-entropy
        of the query examples' scores.

        Args:
            task_batch: B tasks; labels_support (B, N*K) and labels_query (B, N*Q) in 0..N-1.
        Returns:
            loss: scalar tensor, the mean query cross-entropy.
            support accuracy, query accuracy: floats.
        """
        support, query = self.embeddings(task_batch)  # (B, N*K, D), (B, N*Q, D): the encoder's
        labels_support, labels_query = task_batch.labels_support, task_batch.labels_query
        num_way = int(labels_support.max()) + 1
        with torch.autocast(support.device.type, enabled=False):  # distances in float32 under --precision bf16
            one_hot = F.one_hot(labels_support, num_way).to(support.dtype)  # (B, N*K, N)
            prototypes = one_hot.transpose(1, 2) @ support / one_hot.sum(1).unsqueeze(-1)  # (B, N, D): class means

            def scores(embeddings):  # (B, M, D) -> (B, M, N)
                if self.cosine_scale is not None:
                    cosines = F.normalize(embeddings, dim=-1) @ F.normalize(prototypes, dim=-1).transpose(1, 2)
                    return self.cosine_scale * cosines
                return -(embeddings.unsqueeze(2) - prototypes.unsqueeze(1)).square().sum(-1)
            support_scores, query_scores = scores(support), scores(query)
        loss = F.cross_entropy(query_scores.flatten(0, 1), labels_query.flatten())
        support_accuracy = (support_scores.argmax(-1) == labels_support).float().mean().item()
        query_accuracy = (query_scores.argmax(-1) == labels_query).float().mean().item()
        return loss, support_accuracy, query_accuracy


LEARNERS = {'protonet': ProtoNet}  # the classes this program trains and tests


def main(argv=None):
    return cli.main(PROGRAM, argv, LEARNERS)


if __name__ == '__main__':
    run_cli(main)
