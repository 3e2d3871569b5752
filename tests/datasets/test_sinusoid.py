"""Sinusoid regression: the tasks' ranges, and MAML adapting to them."""
import math

import pytest
import torch

import maml
from fewshot import cli, runtime
from fewshot.datasets import sinusoid
from fewshot.engine import checkpoints, evaluation, loop


def test_sinusoid_tasks_have_the_stated_ranges():
    sampler = sinusoid.SinusoidSampler(num_support=5, num_query=7, seed=0)
    batch, amplitude, phase = sampler.sample_with_parameters(4000)
    assert batch.images_support.shape == (4000, 5, 1) and batch.labels_query.shape == (4000, 7, 1)
    assert 0.1 <= amplitude.min() and amplitude.max() <= 5.0 and amplitude.max() > 4.9 and amplitude.min() < 0.2
    assert 0 <= phase.min() and phase.max() <= math.pi and phase.max() > 3.1
    x = torch.cat([batch.images_support, batch.images_query], 1)
    y = torch.cat([batch.labels_support, batch.labels_query], 1)
    assert -5 <= x.min() and x.max() <= 5 and x.min() < -4.99
    assert torch.allclose(y, amplitude.view(-1, 1, 1) * torch.sin(x - phase.view(-1, 1, 1)))
    again = sinusoid.SinusoidSampler(5, 7, seed=0).sample(4000)
    assert torch.equal(again.images_support, batch.images_support) and torch.equal(again.labels_query,
                                                                                    batch.labels_query)


@pytest.mark.slow
def test_maml_on_sinusoids_adapts(tmp_path):
    """A short second-order MAML run (1200 steps of 25 tasks, K = 10, inner LR 0.01):
    one inner step then cuts the query MSE well below the unadapted prediction's
    (measured after 1000 steps: 2.60 -> 1.42 on 64 validation tasks)."""
    command = cli.parse(maml.PROGRAM, ['--dataset', 'sinusoid', '--num_train_iterations', '1200',
                                            '--num_val_tasks', '200', '--val_interval', '100', '--log_dir', str(tmp_path)])
    runtime.seed_everything(0)
    args = command.args
    learner = command.build_learner(args, 'cpu')
    optimizer = loop.build_optimizer(learner, args.learning_rate)
    train_sampler = command.build_sampler('train', args, 0, 'cpu')
    val_sampler = command.build_sampler('val', args, evaluation.VAL_SEED, 'cpu')
    loop.train(learner, optimizer, train_sampler, val_sampler, args, str(tmp_path))
    metrics = evaluation.validate(learner, val_sampler, args)
    assert metrics['post_adapt_query'] < 0.7 * metrics['pre_adapt_query'], metrics
    assert metrics['post_adapt_support'] < metrics['pre_adapt_support']
    assert checkpoints.best_step(str(tmp_path)) == min(
        checkpoints.saved_steps(str(tmp_path)),
        key=lambda s: checkpoints.load(str(tmp_path), s)['val_score'])  # lowest MSE is best
