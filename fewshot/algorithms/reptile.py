"""Reptile (Nichol et al., 2018): per task, num_inner_steps SGD (or Adagrad)
steps on all of the task's examples from theta to phi_i, then

    theta <- theta + epsilon_t * mean_i (phi_i - theta),  epsilon_t = epsilon (1 - t / T).

The move is handed to the training loop as a gradient, g = theta - mean_i phi_i,
which plain SGD at learning rate epsilon_t turns into exactly that update; so
Reptile plugs into the same loop (and the same gradient reduction across
processes) as MAML and ProtoNet. Evaluation is MAML's: fine-tune on the support
set, score the query set.

    python maml.py --algorithm reptile --num_inner_steps 5 --inner_lr 0.1
"""
import torch

from fewshot.algorithms import maml


class Reptile(maml.MAML):
    """MAML's inner loop and evaluation with Reptile's meta-update."""

    optimizer = 'sgd'

    def __init__(self, **options):
        super().__init__(**options)
        self.lr_schedule, self.lr_tag = 'linear', 'meta_step_size'

    def loss(self, task_batch, step):
        """A surrogate objective whose gradient is theta - mean_i phi_i, and (B,) per-task
        metrics on the task's examples (support and query) before and after adapting."""
        meta = self.inner.meta_parameters
        moves = {k: torch.zeros_like(v) for k, v in meta.items()}
        before, after, losses = [], [], []
        for images_support, labels_support, images_query, labels_query in task_batch:
            images = torch.cat([images_support, images_query])
            labels = torch.cat([labels_support, labels_query])
            history, metrics, _ = self.inner.adapt(images, labels, create_graph=False, train=False)
            for k in moves:
                moves[k] += history[-1][k] - meta[k].detach()
            before.append(metrics[0])
            after.append(metrics[-1])
            with torch.no_grad():
                losses.append(self.task.loss(self.inner.forward(images, history[-1]), labels))
        objective = sum((meta[k] * (-moves[k] / len(task_batch))).sum() for k in meta)
        return objective, {'loss': torch.stack(losses), 'pre_adapt_train': torch.stack(before),
                           'post_adapt_train': torch.stack(after)}


# ---------------------------------------------------------------- the algorithm

class ReptileAlgorithm(maml.MAMLAlgorithm):
    """MAML's inner-loop flags (no meta-gradient ones: Reptile takes no meta-gradient)."""
    name = 'reptile'
    own_defaults = dict(learning_rate=1.0)  # a meta step size, whatever Adam rate a dataset sets
    flags = maml.INNER_LOOP_FLAGS

    def recognizes_older(self, checkpoint):
        return False

    def log_name(self, args, changed):
        return maml.inner_loop_log_name(args, False, changed)

    def build_learner(self, args, dataset, device, learner_class=None):
        """learner_class: maml.py's Reptile, which evaluates through its MAML's _outer_step."""
        return (learner_class or Reptile)(**maml.inner_loop_options(args, dataset, device))
