"""tools.lake.ensemble: a member's probabilities score the runs as --test --lake_runs does, the
ensemble averages probabilities, forward selection keeps what lowers the validation error."""
import re

import numpy as np
import pytest

import protonet
from test_lake_runs import runs, tiny_flags  # noqa: F401 (the fixture)
from tools.lake import ensemble as lake_ensemble


def one_hot_ish(classes, confidence, num_way=3):
    """(R, N, N) probabilities: `confidence` on the given classes (R, N), the rest spread evenly."""
    classes, confidence = np.asarray(classes), np.broadcast_to(confidence, np.shape(classes))
    probabilities = np.repeat(((1 - confidence) / (num_way - 1))[..., None], num_way, axis=-1)
    np.put_along_axis(probabilities, classes[..., None], confidence[..., None], axis=-1)
    return probabilities


def test_the_ensemble_takes_the_class_of_the_mean_probability():
    labels = np.array([[0, 1, 2], [2, 0, 1]])
    first = one_hot_ish([[1, 1, 2], [2, 0, 1]], 0.6)  # wrong on run 0's first item
    second = one_hot_ish([[0, 1, 2], [0, 0, 1]], [[0.9, 0.5, 0.5], [0.5, 0.5, 0.5]])  # wrong on run 1's
    assert lake_ensemble.ensemble_errors([first], labels) == pytest.approx([100 / 3, 0])
    assert lake_ensemble.ensemble_errors([second], labels) == pytest.approx([0, 100 / 3])
    # the means: run 0's first item class 0 (0.2 + 0.9) / 2 against class 1 (0.6 + 0.05) / 2;
    # run 1's class 2 (0.6 + 0.25) / 2 against class 0 (0.2 + 0.5) / 2: right where either alone errs
    assert lake_ensemble.ensemble_errors([first, second], labels) == pytest.approx([0, 0])


def test_forward_selection_keeps_the_greedy_orders_best_prefix_on_validation():
    labels = np.zeros((4, 3), dtype=int)
    helps = one_hot_ish([[1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]],
                        [[0.6, 0.9, 0.9], [0.9] * 3, [0.9] * 3, [0.9] * 3])  # 1 of 12 wrong: the best alone
    adds = one_hot_ish([[0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 1, 0]],
                       [[0.9, 0.6, 0.6], [0.6] * 3, [0.6] * 3, [0.6, 0.6, 0.6]])  # 2 wrong, sure where helps errs
    useless = one_hot_ish(np.full((4, 3), 2), 0.9)  # all wrong, and no help to the other two
    members = {'useless': useless, 'adds': adds, 'helps': helps}
    assert [lake_ensemble.ensemble_errors([members[m]], labels).mean() for m in members] == pytest.approx([100, 100 / 6, 100 / 12])
    assert lake_ensemble.ensemble_errors([helps, adds], labels).mean() == 0
    assert lake_ensemble.ensemble_errors([helps, adds, useless], labels).mean() == 0  # no lower: the shorter kept
    assert lake_ensemble.choose_members(members, labels) == ['helps', 'adds']
    assert lake_ensemble.choose_members({'useless': useless, 'helps': helps}, labels) == ['helps']
    # two members that lower the error only together: the greedy order's longer prefix is kept
    labels = np.zeros((1, 5), dtype=int)
    a = one_hot_ish([[1, 0, 0, 0, 0]], [[0.6, 0.9, 0.9, 0.9, 0.9]])  # 1 of 5 wrong
    b = one_hot_ish([[0, 2, 0, 0, 1]], [[0.55, 0.6, 0.9, 0.9, 0.6]])  # 2 wrong
    c = one_hot_ish([[0, 0, 2, 0, 1]], [[0.55, 0.9, 0.6, 0.9, 0.6]])  # 2 wrong
    assert lake_ensemble.ensemble_errors([a, b], labels).mean() == lake_ensemble.ensemble_errors([a], labels).mean()
    assert lake_ensemble.ensemble_errors([a, b, c], labels).mean() == 0
    assert lake_ensemble.choose_members({'a': a, 'b': b, 'c': c}, labels) == ['a', 'b', 'c']


def test_a_members_probabilities_score_the_runs_as_the_test_does(runs, tmp_path, capsys):  # noqa: F811
    path, _, _, _, data_dir = runs
    flags = tiny_flags(data_dir, tmp_path)
    protonet.main(['--split', 'lake', *flags])
    for extra in ([], ['--test_views', '2']):
        errors = protonet.main(['--test', '--lake_runs', path, '--checkpoint_step', '0', *flags, *extra])
        probabilities, labels = lake_ensemble.member_probabilities(str(tmp_path), 0, path, extra)
        assert probabilities.shape == (20, 20, 20) and np.allclose(probabilities.sum(-1), 1)
        assert lake_ensemble.ensemble_errors([probabilities], labels) == pytest.approx(100 * errors)
    capsys.readouterr()


def test_checkpoints_of_one_run_are_members_of_their_own(runs, tmp_path, capsys):  # noqa: F811
    path, _, _, _, data_dir = runs
    protonet.main(['--split', 'lake', *tiny_flags(data_dir, tmp_path), '--num_train_iterations', '2',
                   '--val_interval', '1'])
    capsys.readouterr()
    log_dir = str(tmp_path)
    lake_ensemble.main(['--members', f'{log_dir}:0', f'{log_dir}:1', f'{log_dir}:0', '--val_runs', path,
                        '--test_runs', path, path])
    out = capsys.readouterr().out
    first, labels = lake_ensemble.member_probabilities(log_dir, 0, path)
    second, _ = lake_ensemble.member_probabilities(log_dir, 1, path)
    assert not np.allclose(first, second)
    assert f'{log_dir}:0: validation runs' in out and f'{log_dir}:1: validation runs' in out
    both = lake_ensemble.ensemble_errors([first, second], labels)
    assert f'all 2 members: validation runs {lake_ensemble.spread(both)}' in out  # the repeat counted once
    assert out.count('Lake one-shot runs:') == 2  # each test runs zip scored
    evaluation = re.search(r'evaluation runs ([\d.]+)% ± [\d.]+ \(20 runs\); Lake one-shot runs: mean error rate '
                           r'([\d.]+)% over 20 runs \(accuracy ([\d.]+)%\)$', out, re.M)
    assert evaluation.group(1) == evaluation.group(2)
    assert float(evaluation.group(3)) == pytest.approx(100 - float(evaluation.group(1)), abs=0.006)


def test_bad_members_and_runs_are_refused_in_one_line(tmp_path, capsys):
    (tmp_path / 'state0.pt').touch()
    (tmp_path / 'val.zip').touch()
    member, val = f'{tmp_path}:0', str(tmp_path / 'val.zip')
    for members, val_runs, test_runs, line in (
            ('logs/lake', val, val, "argument --members: 'logs/lake': name a member as LOG_DIR:STEP"),
            (f'{tmp_path}:100', val, val, f'argument --members: {tmp_path}:100: no checkpoint at {tmp_path}/state100.pt'),
            (member, 'v.zip', val, 'argument --val_runs: v.zip does not exist'),
            (member, val, 't.zip', 'argument --test_runs: t.zip does not exist')):
        with pytest.raises(SystemExit):
            lake_ensemble.main(['--members', members, '--val_runs', val_runs, '--test_runs', test_runs])
        err = capsys.readouterr().err.strip().splitlines()
        assert line in err[-1], err
