"""Reptile: its meta-update against the closed form on a quadratic, and its flags."""
import pytest
import torch
import maml
from fewshot import tasks
from fewshot.algorithms import reptile
from fewshot.errors import UserError
from fewshot.tasks import TaskBatch
from test_maml import take_step


def test_reptile_meta_update_on_a_quadratic_has_the_closed_form():
    """Task i's loss is mean_d (w_d - c_i,d)^2 for a constant prediction w, so each
    inner SGD step contracts w - c_i by (1 - 2 a / D): after k steps
    phi_i = c_i + (1 - 2a/D)^k (theta - c_i), and Reptile moves theta by
    epsilon_t * (1 - (1 - 2a/D)^k) * (mean_i c_i - theta), epsilon_t = epsilon (1 - t/T)."""
    dim, steps, inner_lr, epsilon, total = 3, 4, 0.3, 0.8, 10
    theta = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    centres = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, -1.0]], dtype=torch.float64)

    def forward(params, x, fused_bn=True):
        return params['w'].expand(x.shape[0], dim)
    learner = reptile.Reptile(params={'w': theta.clone()}, forward=forward, task=tasks.REGRESSION,
                              num_inner_steps=steps, inner_lr=inner_lr)
    assert learner.optimizer == 'sgd' and learner.lr_schedule == 'linear'
    targets = centres.unsqueeze(1)  # (B, 1, D)
    batch = TaskBatch(torch.zeros(2, 2, 1), targets.expand(2, 2, dim), torch.zeros(2, 3, 1), targets.expand(2, 3, dim))
    shrink = 1 - (1 - 2 * inner_lr / dim) ** steps
    for step in (0, 5):
        before = learner.inner.meta_parameters['w'].detach().clone()
        take_step(learner, batch, step, learning_rate=epsilon, total=total)
        expected = before + epsilon * (1 - step / total) * shrink * (centres.mean(0) - before)
        assert torch.allclose(learner.inner.meta_parameters['w'], expected, rtol=1e-12)


def test_reptile_flags_exclude_meta_gradient_options():
    with pytest.raises(UserError, match='--learn_inner_lrs is a flag of --algorithm maml, not of --algorithm reptile'):
        maml.main(['--algorithm', 'reptile', '--learn_inner_lrs', '--dataset', 'sinusoid'])
