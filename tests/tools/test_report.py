"""report.py's reading, plotting, tables and run scheduling, on small fake event files."""
import os

import pytest

from fewshot import cli
from fewshot.errors import UserError
from fewshot.engine import checkpoints
from tools import report, report_jobs, report_recipes


def write_events(log_dir, tag, points, mtime=None):
    from torch.utils.tensorboard import SummaryWriter
    count = len(os.listdir(log_dir)) if os.path.isdir(log_dir) else 0
    writer = SummaryWriter(log_dir=log_dir, filename_suffix=f'.{count}')
    for step, value in points:
        writer.add_scalar(tag, value, step)
    writer.close()
    if mtime is not None:
        newest = max((os.path.join(log_dir, f) for f in os.listdir(log_dir)), key=os.path.getmtime)
        os.utime(newest, (mtime, mtime))


def test_read_curve_merges_a_resumed_run(tmp_path):
    log_dir = str(tmp_path / 'run')
    write_events(log_dir, 'val_accuracy/query', [(0, 0.2), (50, 0.5), (100, 0.6)], mtime=1_000_000)
    write_events(log_dir, 'val_accuracy/query', [(100, 0.65), (150, 0.7)], mtime=2_000_000)  # after a resume
    steps, values = report.read_curve(log_dir)
    assert steps == [0, 50, 100, 150] and values == pytest.approx([0.2, 0.5, 0.65, 0.7])


def test_read_curve_finds_the_maml_tag(tmp_path):
    log_dir = str(tmp_path / 'run')
    write_events(log_dir, 'val_accuracy/post_adapt_query', [(0, 0.3), (50, 0.4)])
    steps, values = report.read_curve(log_dir)
    assert steps == [0, 50] and values == pytest.approx([0.3, 0.4])


def is_png(path):
    with open(path, 'rb') as f:
        return f.read(8) == b'\x89PNG\r\n\x1a\n' and os.path.getsize(path) > 5000


def test_the_training_clock_leaves_out_start_up_and_the_time_between_sessions(tmp_path):
    from torch.utils.tensorboard import SummaryWriter
    sessions = [[(0, 0.5, 1000.0), (10, 0.7, 1060.0)], [(10, 0.8, 5000.0), (20, 0.9, 5120.0)]]
    for index, points in enumerate(sessions):
        writer = SummaryWriter(log_dir=str(tmp_path), filename_suffix=f'.{index}')
        for step, value, wall_time in points:
            writer.add_scalar('val_accuracy/query', value, step, walltime=wall_time)
        writer.close()
        newest = max(tmp_path.iterdir(), key=lambda p: p.stat().st_mtime_ns)
        os.utime(newest, (1000 + index, 1000 + index))
    minutes, points = report.validation_clock(str(tmp_path))
    assert minutes == pytest.approx(3.0)
    assert [(step, round(value, 4), round(at, 4)) for step, value, at in points] == [(0, 0.5, 0.0), (10, 0.8, 1.0),
                                                                                      (20, 0.9, 3.0)]


def test_plots_are_written(tmp_path):
    curves = {'a': ([0, 50, 100], [0.2, 0.5, 0.6]), 'b': ([0, 50], [0.3, 0.4])}
    report.plot_curves(curves, 'title', str(tmp_path / 'curves.png'), quick=True)
    rows = [{'num_support': str(k), 'mean': str(0.5 + k / 50), 'ci95': '0.01'} for k in report.K_SWEEP]
    report.plot_k_sweep({'ProtoNet': rows}, str(tmp_path / 'sweep.png'), quick=False)
    assert is_png(tmp_path / 'curves.png') and is_png(tmp_path / 'sweep.png')


def test_results_table_rows():
    rows = [{'num_support': '1', 'num_query': '15', 'num_test_tasks': '600', 'mean': '0.95812', 'ci95': '0.00431'}]
    table = report.results_table({'ProtoNet trained 5w5s': rows}).splitlines()
    assert table[0].startswith('| model | test K')
    assert table[2] == '| ProtoNet trained 5w5s | 1 | 15 | 600 | 0.958 ± 0.004 |'


def test_a_fresh_experiment_trains_with_its_own_flags_and_the_report_data(tmp_path):
    args = report.parse_args(['--quick', '--out', str(tmp_path), '--data_dir', 'D'])
    fresh = report.training_command('maml_inner_lr_0.4', args)
    assert fresh[:2] == ['python', 'maml.py'] and fresh[fresh.index('--inner_lr') + 1] == '0.4'
    assert fresh[fresh.index('--data_dir') + 1] == os.path.abspath('D') and '--checkpoint_step' not in fresh
    assert fresh[fresh.index('--num_train_iterations') + 1] == str(report.EXPERIMENTS['maml_inner_lr_0.4'][2])
    fast = report.training_command('maml_inner_lr_0.4', report.parse_args(['--fast', '--out', str(tmp_path)]))
    assert fast[fast.index('--precision') + 1] == 'auto' and fast[fast.index('--log_dir') + 1].startswith(str(tmp_path))
    assert fast[fast.index('--num_train_iterations') + 1] == str(report.EXPERIMENTS['maml_inner_lr_0.4'][3])


def marker_command(folder, name, seconds=1.0):
    """A command that records when it started and ended, and the GPU it was given."""
    code = (f"import os, time; start = time.time(); time.sleep({seconds}); "
            f"open(os.path.join({str(folder)!r}, {name!r}), 'w').write("
            f"f'{{start}} {{time.time()}} {{os.environ.get(\"CUDA_VISIBLE_DEVICES\")}}')")
    return ['python', '-c', code]


def test_commands_run_with_paths_relative_to_the_project_folder(tmp_path):
    root = report_jobs.ROOT
    command = ['python', 'protonet.py', '--log_dir', os.path.join(root, 'reports', 'x'), f'--data_dir={tmp_path}',
               '--num_way', '5', 'relative/kept']
    made = report_jobs.portable(command)
    assert made[:4] == ['python', 'protonet.py', '--log_dir', os.path.join('reports', 'x')]
    assert made[4] == f'--data_dir={os.path.relpath(tmp_path, root)}' and made[5:] == command[5:]
    assert os.path.samefile(os.path.join(root, made[4].split('=')[1]), tmp_path)


@pytest.mark.slow
def test_jobs_run_at_once_each_with_its_own_gpu(tmp_path):
    commands = [marker_command(tmp_path, name) for name in 'abc']
    logs = [str(tmp_path / f'{name}.log') for name in 'abc']
    report.run_commands(commands, jobs=2, gpus=['4', '7'], logs=logs)
    marks = {name: (tmp_path / name).read_text().split() for name in 'abc'}
    start = {name: float(mark[0]) for name, mark in marks.items()}
    end = {name: float(mark[1]) for name, mark in marks.items()}
    assert start['b'] < end['a'] and start['a'] < end['b']  # a and b ran together
    assert start['c'] >= min(end['a'], end['b'])  # c waited for a free slot
    assert {marks['a'][2], marks['b'][2]} == {'4', '7'} and marks['c'][2] in ('4', '7')  # one GPU each


@pytest.mark.parametrize('jobs', [1, 2])
def test_the_first_failed_job_stops_the_others_in_one_line(tmp_path, jobs):
    commands = [['python', '-c', 'raise SystemExit(3)'], marker_command(tmp_path, 'running', 3.0),
                marker_command(tmp_path, 'waiting', 0.0)]
    logs = [str(tmp_path / f'{name}.log') for name in 'xyz']
    with pytest.raises(SystemExit) as failure:
        report.run_commands(commands, jobs=jobs, logs=logs)
    line = str(failure.value)
    assert line.startswith('error: python -c raise SystemExit(3) failed (exit 3') and '\n' not in line
    assert not (tmp_path / 'running').exists() and not (tmp_path / 'waiting').exists()  # stopped, never started


@pytest.mark.slow
def test_two_jobs_train_what_one_job_trains(tmp_path):
    import torch
    runs = {}
    for jobs in (1, 2):
        log_dirs = [str(tmp_path / f'jobs{jobs}' / name) for name in ('first', 'second')]
        commands = [['python', 'maml.py', '--dataset', 'sinusoid', '--num_train_iterations', '30', '--seed', seed,
                     '--log_dir', log_dir] for seed, log_dir in zip(('1', '2'), log_dirs)]
        report.run_commands(commands, jobs, logs=[d + '.log' for d in log_dirs])
        runs[jobs] = [checkpoints.load(d, 29)['learner']['meta_parameters'] for d in log_dirs]
    for one, two in zip(runs[1], runs[2]):
        assert all(torch.equal(one[k], two[k]) for k in one)
    assert not torch.equal(runs[1][0]['head'], runs[1][1]['head'])  # two different runs


# ---------------------------------------------------------------- the papers' protocol

@pytest.mark.parametrize('name', list(report.PAPER_EXPERIMENTS))
def test_papers_experiments_parse_to_the_cited_settings(name):
    import maml
    import protonet
    script, flags, _, _ = report.PAPER_EXPERIMENTS[name]
    args = cli.parse(protonet.PROGRAM if script == 'protonet.py' else maml.PROGRAM, flags).args
    assert (args.class_split, args.augment_rotations, args.learning_rate) == ('vinyals', True, 0.001)
    if script == 'protonet.py':
        assert (args.num_way, args.num_query, args.batch_size, args.lr_halving_steps) == (60, 5, 1, 2000)
    else:
        assert args.num_query == args.num_support and args.lr_halving_steps == 0
        assert (args.batch_size, args.inner_lr, args.num_inner_steps) == \
            ((32, 0.4, 1) if args.num_way == 5 else (16, 0.1, 5))


def test_papers_table_tests_each_cell_as_its_paper(tmp_path, monkeypatch):
    calls = {}

    def fake_test(name, args, csv_name, flags):
        calls[csv_name] = (name, flags)
        return [{'mean': '0.9876', 'ci95': '0.0012'}]
    monkeypatch.setattr(report, 'test_experiment', fake_test)
    args = report.parse_args(['--protocol', 'papers', '--quick', '--out', str(tmp_path)])
    assert args.out.endswith(str(tmp_path)) and args.protocol == 'papers'
    monkeypatch.setattr(report, 'has_ended', lambda command: True)
    monkeypatch.setattr(report, 'training_facts', lambda name, args: '7 / 9 | 3 min | no | CPU')
    lines = report.paper_table(args).splitlines()
    assert len(lines) == 2 + 8 and lines[2].endswith('| 98.8 ± 0.1 | 98.8 | yes |')
    assert lines[6] == '| MAML | 5 | 1 | `maml_5w1s` | 7 / 9 | 3 min | no | CPU | 1 | 600 | 98.8 ± 0.1 | 98.7 ± 0.4 | yes |'
    assert lines[7].endswith('| 99.9 ± 0.1 | no: 1.0 points below 99.8 |')
    name, flags = calls['protonet_60w1s_20w1s.csv']
    assert name == 'protonet_60w1s' and flags == ['--num_way', '20', '--num_support', '1', '--num_query', '5',
                                                  '--num_test_tasks', '1000']
    name, flags = calls['maml_5w1s_5w1s.csv']
    assert name == 'maml_5w1s' and flags[-4:] == ['--num_test_tasks', '600', '--num_inner_steps', '3']


def test_a_test_command_names_its_task_count_once(tmp_path, monkeypatch):
    commands = []
    monkeypatch.setattr(report, 'run_command', commands.append)
    monkeypatch.setattr(report, 'read_csv', lambda table: [])
    args = report.parse_args(['--protocol', 'papers', '--out', str(tmp_path), '--num_test_tasks', '600'])
    os.makedirs(tmp_path / 'runs' / 'maml_5w1s')
    (tmp_path / 'runs' / 'maml_5w1s' / 'state9.pt').write_bytes(b'')
    report.test_experiment('maml_5w1s', args, 'a.csv', ['--num_test_tasks', '1000'])
    report.test_experiment('maml_5w1s', args, 'b.csv', [])
    task_counts = [command[command.index('--num_test_tasks') + 1] for command in commands]
    assert [command.count('--num_test_tasks') for command in commands] == [1, 1] and task_counts == ['1000', '600']


def test_a_fast_cell_tests_the_model_validation_took_from_another_entry(tmp_path, monkeypatch):
    calls = {}
    monkeypatch.setattr(report, 'test_experiment', lambda name, args, csv_name, flags: calls.setdefault(
        csv_name, (name, flags)) and [{'mean': '0.99', 'ci95': '0.001'}])
    monkeypatch.setattr(report, 'has_ended', lambda command: True)
    monkeypatch.setattr(report, 'training_facts', lambda name, args: '7 / 9 | 3 min | no | CPU')
    lines = report.paper_table(report.parse_args(['--protocol', 'papers', '--fast', '--out', str(tmp_path)]))
    assert '| MAML | 5 | 5 | `maml_5w1s` | 7 / 9 |' in lines
    name, flags = calls['maml_5w1s_5w5s.csv']
    assert name == 'maml_5w1s' and flags[:6] == ['--num_way', '5', '--num_support', '5', '--num_query', '5']
    assert 'maml_5w5s_5w5s.csv' not in calls


@pytest.mark.parametrize('mean, paper, said', [(98.3, (98.7, 0.4), 'yes'), (98.2, (98.7, 0.4), 'no: 0.1 points below 98.3'),
                                               (95.5, (96.0, None), 'yes'), (95.44, (96.0, None), 'no: 0.1 points below 95.5'),
                                               (99.9, (98.9, 0.2), 'yes')])
def test_an_entry_reaches_the_paper_within_its_interval_or_half_a_point(mean, paper, said):
    assert report.verdict(mean, paper) == said


def test_the_cpu_recipes_validate_where_their_hardest_cell_is_tested_and_stop_at_its_figure():
    import maml
    import protonet
    served = {}
    for cell, (name, _, _, _, (figure, _)) in report.PAPER_TESTS.items():
        if cell not in report.FAST_BORROWS:  # a model another cell borrows validates in its own cells
            served[name] = max(served.get(name, (0, 0, 0)), (*cell[1:], figure))
    assert set(served) == set(report.PAPER_FAST) and set(report.FAST_BORROWS.values()) <= set(report.PAPER_FAST)
    fast = report.parse_args(['--protocol', 'papers', '--fast'])
    assert {cell: test[0] for cell, test in report.cell_tests(fast).items() if cell in report.FAST_BORROWS} == \
        report.FAST_BORROWS
    for name, (script, flags, steps) in report.PAPER_FAST.items():
        assert '--test' not in flags and '--checkpoint_step' not in flags
        args = cli.parse(protonet.PROGRAM if script == 'protonet.py' else maml.PROGRAM, flags).args
        way, shot, figure = served[name]
        assert (args.augment_rotations, args.num_way, args.num_support) == (True, way, shot)
        if args.class_split == 'vinyals_trainval':  # validation classes trained on: the test takes the last step
            assert args.target_accuracy is None and args.val_interval >= steps
        else:
            assert args.class_split == 'vinyals' and args.target_accuracy == pytest.approx(figure / 100)
    assert [line.split(':')[0].strip() for line in report.papers_fast_epilog().splitlines()[1:]] == list(report.PAPER_FAST)


def test_an_unknown_entry_is_refused_in_one_line():
    with pytest.raises(UserError, match='--only maml_5w2s: not an experiment of --protocol papers; choose from '
                                        'protonet_60w1s, protonet_60w5s'):
        report.parse_args(['--protocol', 'papers', '--fast', '--only', 'maml_5w2s'])


def tiny_papers_table(monkeypatch, tmp_path, data_dir):
    """report.py --protocol papers --fast with two tiny entries (4-channel networks, a few steps) and
    the table's two cells they serve; the other flags of the command."""
    tiny = [*report_recipes.VINYALS, '--num_hidden_channels', '4', '--num_query', '2', '--num_val_tasks', '4',
            '--val_interval', '2', '--batch_size', '1']
    monkeypatch.setattr(report, 'PAPER_FAST', {
        'protonet_60w1s': ('protonet.py', tiny, 4),
        'maml_5w1s': ('maml.py', [*tiny, '--target_accuracy', '0.01', '--target_tasks', '4'], 50)})
    monkeypatch.setattr(report, 'PAPER_TESTS', {cell: test for cell, test in report.PAPER_TESTS.items()
                                                if cell in (('ProtoNet', 5, 1), ('MAML', 5, 1))})
    return ['--protocol', 'papers', '--fast', '--out', str(tmp_path), '--data_dir', data_dir]


def table_rows(out):
    lines = (out / 'index.md').read_text().splitlines()
    return {algorithm: next(line for line in lines if line.startswith(f'| {algorithm} | 5 | 1 |'))
            for algorithm in ('ProtoNet', 'MAML')}


def refuse(commands, *args, **kwargs):
    assert not commands, f'nothing is left to train or test, yet it ran {commands}'



@pytest.mark.slow
def test_one_entry_alone_resumes_is_tested_once_and_then_kept(omniglot_dir, tmp_path, monkeypatch, capfd):
    from fewshot.engine import tuning
    argv = tiny_papers_table(monkeypatch, tmp_path, omniglot_dir) + ['--only', 'protonet_60w1s']
    args = report.parse_args(argv)
    interrupted = report.command_line('protonet_60w1s', args)
    interrupted[interrupted.index('--num_train_iterations') + 1] = '2'
    report.run_command(interrupted)  # a run stopped after 2 of its 4 steps
    assert report.training_command('protonet_60w1s', args) is not None
    report.main(argv)
    assert 'resuming from' in capfd.readouterr().out
    log_dir = tmp_path / 'runs' / 'protonet_60w1s'
    assert checkpoints.saved_steps(log_dir)[-1] == 3 and len(list(log_dir.glob('events.out.tfevents.*'))) == 2
    rows = table_rows(tmp_path)
    assert rows['MAML'].startswith('| MAML | 5 | 1 | `maml_5w1s` | not run |')
    assert not (tmp_path / 'runs' / 'maml_5w1s').exists()  # --only: the other entry is not trained
    cells = rows['ProtoNet'].split(' | ')
    assert cells[4] == f'{checkpoints.best_step(log_dir) + 1} / 4' and cells[7] == tuning.machine()
    assert cells[6] == 'no' and cells[8:10] == ['5', '1000'] and 0 < float(cells[10].split(' ± ')[0]) <= 100
    tested = [row for table in (tmp_path / 'tests').glob('*.csv') for row in report.read_csv(table)]
    assert tested and all(row['tasks_from'] == 'the Omniglot test split (vinyals): 1692 classes' for row in tested)
    assert all(not os.path.isabs(row['log_dir']) and os.path.exists(os.path.join(report_jobs.ROOT, row['log_dir']))
               for row in tested)  # relative to the project folder, where the runs run
    assert str(tmp_path) not in (tmp_path / 'index.md').read_text()
    monkeypatch.setattr(report, 'run_commands', refuse)
    monkeypatch.setattr(report, 'run_command', refuse)
    report.main(argv)  # finished, and its test read back: the test classes are touched once
    assert table_rows(tmp_path) == rows


@pytest.mark.slow
def test_an_entry_that_reached_its_target_is_finished_at_that_step(omniglot_dir, tmp_path, monkeypatch):
    argv = tiny_papers_table(monkeypatch, tmp_path, omniglot_dir) + ['--only', 'maml_5w1s']
    report.main(argv)
    log_dir = tmp_path / 'runs' / 'maml_5w1s'
    last = checkpoints.saved_steps(log_dir)[-1]
    assert last < 49 and checkpoints.best_step(log_dir) == last
    assert report.training_command('maml_5w1s', report.parse_args(argv)) is None
    cells = table_rows(tmp_path)['MAML'].split(' | ')
    assert cells[4] == f'{last + 1} / {last + 1}' and cells[6].startswith(f'step {last + 1}, ')


def test_the_homework_report_waits_for_runs_left_out_by_only(tmp_path, monkeypatch, capsys):
    trained = []
    monkeypatch.setattr(report, 'train_experiments', lambda names, args: trained.extend(names))
    monkeypatch.setattr(report, 'has_ended', lambda command: command[command.index('--log_dir') + 1].endswith('5w5s'))
    report.write_report(report.parse_args(['--fast', '--only', 'protonet_5w5s', '--out', str(tmp_path)]))
    assert trained == ['protonet_5w5s'] and not (tmp_path / 'index.md').exists()
    waiting = capsys.readouterr().out.strip()
    assert waiting.startswith('the report waits for protonet_5w1s, maml_inner_lr_0.4,') and 'protonet_5w5s' not in waiting
