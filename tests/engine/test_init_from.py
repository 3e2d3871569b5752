"""--init_from: training starts from another run's weights, with a fresh optimizer and step count."""
import pytest
import torch

import maml
from fewshot.engine import checkpoints
from fewshot.errors import UserError

SINUSOID = ['--dataset', 'sinusoid', '--num_val_tasks', '2', '--batch_size', '2', '--val_interval', '3']


def weights(log_dir, step):
    return torch.load(checkpoints.path(log_dir, step), weights_only=False)['learner']['meta_parameters']


def train(log_dir, *extra):
    maml.main([*SINUSOID, '--log_dir', str(log_dir), *extra])


@pytest.fixture
def trained(tmp_path):
    log_dir = tmp_path / 'first'
    train(log_dir, '--num_train_iterations', '6', '--seed', '1')
    return log_dir


def test_training_starts_from_the_given_weights(trained, tmp_path, capsys):
    source = checkpoints.path(str(trained), 5)
    train(tmp_path / 'tuned', '--num_train_iterations', '1', '--learning_rate', '1e-9', '--seed', '2',
          '--init_from', source)
    assert f'starting from the weights of {source}' in capsys.readouterr().out
    train(tmp_path / 'scratch', '--num_train_iterations', '1', '--learning_rate', '1e-9', '--seed', '2')
    start, tuned, scratch = weights(trained, 5), weights(tmp_path / 'tuned', 0), weights(tmp_path / 'scratch', 0)
    for name in start:  # one Adam step of 1e-9 moves each weight by about 1e-9
        assert torch.allclose(tuned[name], start[name], atol=1e-7) and not torch.allclose(scratch[name], start[name])
    assert torch.load(checkpoints.path(tmp_path / 'tuned', 0), weights_only=False)['step'] == 0


def test_a_log_dir_gives_its_best_step(trained, tmp_path, capsys):
    train(tmp_path / 'tuned', '--num_train_iterations', '1', '--init_from', str(trained))
    best = checkpoints.path(str(trained), checkpoints.best_step(str(trained)))
    assert f'starting from the weights of {best}' in capsys.readouterr().out


def test_inner_learning_rates_are_the_checkpoints_only_where_both_runs_learn_them(tmp_path):
    learned = tmp_path / 'learned'
    train(learned, '--num_train_iterations', '3', '--learn_inner_lrs', '--learning_rate', '0.05')
    trained_lrs = torch.load(checkpoints.path(learned, 2), weights_only=False)['learner']['inner_lrs']
    assert all(not torch.allclose(lr, torch.tensor(0.4)) for lr in trained_lrs.values())
    for flags, expected in ((['--learn_inner_lrs'], trained_lrs), (['--inner_lr', '0.1'], None)):
        log_dir = tmp_path / ('both' if expected else 'fixed')
        train(log_dir, '--num_train_iterations', '1', '--learning_rate', '1e-9', '--init_from', str(learned), *flags)
        lrs = torch.load(checkpoints.path(log_dir, 0), weights_only=False)['learner']['inner_lrs']
        for name, lr in lrs.items():
            assert torch.allclose(lr, expected[name], atol=1e-7) if expected else torch.all(lr == 0.1)


def test_weights_of_another_network_or_algorithm_or_nowhere_are_one_line(trained, tmp_path):
    learned = tmp_path / 'learned'
    train(learned, '--num_train_iterations', '1', '--learn_inner_lrs')
    with pytest.raises(UserError, match=r"do not fit this run's network \(inner_lrs/.* differ\)"):
        train(tmp_path / 'a', '--num_train_iterations', '1', '--learn_inner_lrs', '--learn_inner_lrs_per_step',
              '--num_inner_steps', '2', '--init_from', str(learned))
    with pytest.raises(UserError, match='written by maml on sinusoid tasks, not reptile on sinusoid'):
        train(tmp_path / 'b', '--num_train_iterations', '1', '--algorithm', 'reptile', '--init_from', str(trained))
    for nowhere in (tmp_path / 'nowhere', tmp_path):  # a folder without checkpoints
        with pytest.raises(UserError, match=f'--init_from {nowhere}: no such file, or a folder without checkpoints'):
            train(tmp_path / 'c', '--init_from', str(nowhere))
