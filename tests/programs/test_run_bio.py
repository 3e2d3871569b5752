"""run_bio.sh: the course's metabolism command, from anywhere, with a relative data folder."""
import os
import subprocess

import pytest

from conftest import ROOT
import run_metabolism
from fewshot import cli
from fewshot.engine import checkpoints
from test_metabolism import write_tables


@pytest.mark.slow
def test_run_bio_sh_runs_the_course_command(tmp_path):
    data = write_tables(tmp_path / 'data')
    log_dir = str(tmp_path / 'log')
    result = subprocess.run(['bash', os.path.join(ROOT, 'run_bio.sh'), data, '--num_train_iterations', '2',
                             '--num_val_tasks', '2', '--num_support', '2', '--num_query', '3', '--log_dir', log_dir],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    args = checkpoints.load(log_dir, 1)['args']
    assert (args['algorithm'], args['dataset'], args['data_dir'], args['batch_size'], args['learning_rate']) == \
        ('protonet', 'metabolism', data, 4, 0.0005)


@pytest.mark.slow
def test_run_bio_sh_takes_a_relative_data_folder_from_where_it_is_run(tmp_path):
    write_tables(tmp_path / 'data')
    log_dir = str(tmp_path / 'log')
    before = sorted(os.listdir(ROOT))
    result = subprocess.run(['bash', os.path.join(ROOT, 'run_bio.sh'), 'data', '--num_train_iterations', '1',
                             '--num_val_tasks', '2', '--num_support', '2', '--num_query', '3', '--log_dir', log_dir],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert checkpoints.load(log_dir, 0)['args']['data_dir'] == str(tmp_path / 'data')
    assert sorted(os.listdir(ROOT)) == before  # nothing made inside the repository


@pytest.mark.slow
def test_run_bio_sh_leaves_the_defaults_to_the_dataset_and_algorithm(tmp_path):
    data = write_tables(tmp_path / 'data')
    log_dir = str(tmp_path / 'log')
    result = subprocess.run(['bash', os.path.join(ROOT, 'run_bio.sh'), data, '--algorithm', 'reptile',
                             '--num_train_iterations', '1', '--num_val_tasks', '2', '--num_support', '2',
                             '--num_query', '3', '--log_dir', log_dir], capture_output=True, text=True, timeout=300,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    args = checkpoints.load(log_dir, 0)['args']
    expected = vars(cli.parse(run_metabolism.PROGRAM, ['--algorithm', 'reptile']).args)
    assert args['algorithm'] == 'reptile' and args['learning_rate'] == expected['learning_rate'] == 1.0
    assert (args['num_way'], args['batch_size']) == (expected['num_way'], expected['batch_size']) == (2, 4)
