"""A non-episodic baseline (Chen et al., 2019, "A Closer Look at Few-shot
Classification": Baseline): the encoder is trained as a plain classifier of the
training classes, and tested the ProtoNet way, with prototypes of its features.

Each training step classifies every support and query example of the
sampler's tasks among the classes of its task (metabolism: a 2-way head per
training assay), so the class labels, not the episodes, drive the encoder.

    python run_metabolism.py --algorithm baseline
"""
import torch
import torch.nn.functional as F

from fewshot import contracts, execution, flags, networks, tasks
from fewshot.algorithms import protonet


class Baseline(protonet.ProtoNet):
    """ProtoNet's encoder and evaluation, trained with a linear head over the training classes."""

    def __init__(self, network, head, device='cpu'):
        """network: as ProtoNet's; head: {'head': (C, D), 'head_bias': (C,)} over the C training classes."""
        super().__init__(network, device, tasks_per_call=execution.ALL_TASKS)
        self.head = {k: v.to(self.device).requires_grad_() for k, v in head.items()}

    def parameters(self):
        return super().parameters() + list(self.head.values())

    def _class_logits(self, task_batch):
        """(B, M, N) logits of the task's own classes for all M = N*(K+Q) examples of each task,
        and their (B, M) labels."""
        if task_batch.classes is None:
            raise ValueError('the baseline needs tasks that name their classes (TaskBatch.classes)')
        examples = torch.cat([task_batch.images_support, task_batch.images_query], dim=1)
        labels = torch.cat([task_batch.labels_support, task_batch.labels_query], dim=1)
        features = self.embed(examples)  # (B, M, D): batch statistics per task
        own_rows = task_batch.classes  # (B, N): the head's row of each task label
        weight, bias = self.head['head'][own_rows], self.head['head_bias'][own_rows]  # (B, N, D), (B, N)
        return features @ weight.transpose(1, 2) + bias.unsqueeze(1), labels

    def loss(self, task_batch, step):
        """Cross-entropy of the classifier over all the tasks' examples, and its (B,) accuracy."""
        logits, labels = self._class_logits(task_batch)
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        return loss, {'classifier': tasks.task_accuracy(logits, labels).detach()}

    def state(self):
        return {**super().state(), 'head': {k: v.detach().cpu() for k, v in self.head.items()}}

    def load_state(self, state):
        super().load_state(state)
        for k, v in state['head'].items():
            self.head[k].data.copy_(v)


# ---------------------------------------------------------------- the algorithm

class BaselineAlgorithm(contracts.Algorithm):
    name = 'baseline'
    needs_train_classes = True

    def build_learner(self, args, dataset, device, learner_class=None):
        """The dataset's network with a head over its num_train_classes training classes."""
        params, _ = dataset.network(args, num_outputs=dataset.num_train_classes)
        head = {k: params.pop(k) for k in ('head', 'head_bias')}
        _, features = dataset.network(args)
        return (learner_class or Baseline)(networks.FunctionalNet(features, params), head, device)

    def log_name(self, args, changed):
        return (flags.task_log_name(args) + f'.lr_{args.learning_rate}'
                f'.batch_size_{args.batch_size}' + changed)
