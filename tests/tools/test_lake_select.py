"""tools.lake.select: a run's checkpoint chosen by its mean error rate on the validation runs."""
import numpy as np
import pytest

from tools.lake import select as lake_select


def test_the_checkpoint_with_the_lowest_validation_error_is_chosen_ties_the_later(monkeypatch, capsys):
    errors = {0: [50.0, 50.0], 100: [10.0, 20.0], 150: [0.0, 0.0], 200: [20.0, 10.0], 250: [15.0, 15.0]}
    monkeypatch.setattr(lake_select.checkpoints, 'saved_steps', lambda log_dir: sorted(errors))
    scored_runs = []

    def run_errors(log_dir, step, runs, extra=()):
        scored_runs.append((step, runs, tuple(extra)))
        return np.array(errors[step])
    monkeypatch.setattr(lake_select, 'run_errors', run_errors)
    best, scored = lake_select.choose_step('L', 'val.zip', every=100, extra=['--test_views', '8'])
    assert best == 250  # 150 (0%) is off the grid of multiples of 100; 100, 200, 250 tie at 15%: the last
    assert sorted(scored) == [0, 100, 200, 250] and all(r == 'val.zip' for _, r, _ in scored_runs)
    assert {e for _, _, e in scored_runs} == {('--test_views', '8')}
    assert 'step 200: validation runs 15.00% ± 9.80' in capsys.readouterr().out  # 1.96 x 7.07 / sqrt(2)
    errors[100] = [10.0, 10.0]
    assert lake_select.choose_step('L', 'val.zip', every=50)[0] == 150
    assert lake_select.choose_step('L', 'val.zip', every=100)[0] == 100


def test_a_log_dir_without_checkpoints_and_missing_runs_are_refused_in_one_line(tmp_path, capsys):
    (tmp_path / 'state0.pt').touch()
    (tmp_path / 'val.zip').touch()
    val = str(tmp_path / 'val.zip')
    for log_dir, val_runs, line in ((str(tmp_path / 'none'), val, f'argument --log_dir: {tmp_path}/none holds no '
                                                                   'checkpoints'),
                                    (str(tmp_path), 'v.zip', 'argument --val_runs: v.zip does not exist')):
        with pytest.raises(SystemExit):
            lake_select.main(['--log_dir', log_dir, '--val_runs', val_runs, '--test_runs', val])
        assert line in capsys.readouterr().err.strip().splitlines()[-1]
