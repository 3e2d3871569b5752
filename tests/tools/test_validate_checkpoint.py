"""tools/validate_checkpoint.py: a checkpoint scored on validation tasks, through the real programs."""
import pytest
import torch

import maml
from fewshot.engine import checkpoints
from fewshot.errors import UserError
from tools import validate_checkpoint

SINUSOID = ['--dataset', 'sinusoid', '--num_train_iterations', '6', '--val_interval', '3', '--num_val_tasks', '4',
            '--batch_size', '2', '--seed', '5']


def score(capsys, argv):
    validate_checkpoint.main(argv)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    return float(line.split('mean ')[1].split(',')[0]), line


def test_the_trained_shape_scores_what_training_validated_and_another_shape_differs(tmp_path, capsys):
    log_dir = str(tmp_path / 'run')
    maml.main([*SINUSOID, '--log_dir', log_dir])
    step = checkpoints.best_step(log_dir)
    recorded = torch.load(checkpoints.path(log_dir, step), weights_only=False)['val_score']
    mean, line = score(capsys, ['maml.py', '--log_dir', log_dir, '--num_val_tasks', '4'])
    assert f'checkpoint step {step} of {log_dir}' in line and 'over 4 tasks of' in line
    assert mean == pytest.approx(recorded, abs=5e-5)  # printed to 4 decimals
    more_support, line = score(capsys, ['maml.py', '--log_dir', log_dir, '--num_val_tasks', '4', '--num_support', '20'])
    assert 'tasks of 20 support' in line and more_support != pytest.approx(mean, abs=5e-5)


def test_a_missing_program_name_is_one_line():
    with pytest.raises(UserError, match='name the program first'):
        validate_checkpoint.main(['--log_dir', 'x'])
