"""tools.lake.recipe: one command builds the runs, trains and chooses the members, and scores the
ensemble; the same command again continues rather than redoing (tiny members on the real data)."""
import os
import re

import pytest

from test_lake_runs import runs  # noqa: F401 (the fixture)
from tools.lake import recipe as lake_recipe

TINY = ('--num_train_iterations 1 --num_hidden_channels 4 --num_val_tasks 2 --train_num_way 5 '
        '--image_size 28 --precision fp32')


def outputs(out):
    """{path: modification time} of every file the recipe wrote."""
    return {os.path.join(root, name): os.stat(os.path.join(root, name)).st_mtime_ns
            for root, _, names in os.walk(out) for name in names}


@pytest.mark.slow
def test_one_command_trains_chooses_and_scores_and_again_continues(runs, tmp_path, capsys, monkeypatch):  # noqa: F811
    official, _, _, _, data_dir = runs
    monkeypatch.setattr(lake_recipe, 'RUNS', {'val_runs.zip': '--set background_validation --runs 4 --seed 0',
                                              'eval_runs.zip': '--set evaluation --runs 6 --seed 1'})
    monkeypatch.setattr(lake_recipe, 'TEST_FLAGS', '--test_views 2')
    out = str(tmp_path / 'recipe')
    argv = ['--data_dir', data_dir, '--out', out, '--official_runs', official, '--train_flags', TINY]
    lake_recipe.main(argv)
    first = capsys.readouterr().out
    for name in lake_recipe.MEMBERS:
        assert os.path.exists(os.path.join(out, name, 'state0.pt')), name
    chosen = re.search(r'^chosen (.+): validation runs [\d.]+% ± [\d.]+ \(4 runs\)$', first, re.M).group(1)
    assert set(chosen.split(', ')) <= {f'{out}/{name}:0' for name in lake_recipe.MEMBERS}
    assert re.search(rf'^{re.escape(out)}/eval_runs.zip: evaluation runs .+ \(6 runs\); Lake one-shot runs: mean '
                     r'error rate [\d.]+% over 6 runs', first, re.M)
    assert re.search(rf'^{re.escape(official)}: evaluation runs .+ \(20 runs\); Lake one-shot runs: mean error rate '
                     r'[\d.]+% over 20 runs', first, re.M)
    written = outputs(out)
    lake_recipe.main(argv)
    again = capsys.readouterr().out
    assert outputs(out) == written  # nothing built or trained anew
    assert again.count('has finished') == len(lake_recipe.MEMBERS)
    assert again.splitlines()[-3:] == first.splitlines()[-3:]  # the same choice and scores


def test_missing_official_runs_are_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit):
        lake_recipe.main(['--data_dir', str(tmp_path), '--out', str(tmp_path / 'out'), '--official_runs', 'all.zip'])
    assert 'argument --official_runs: all.zip does not exist' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()
