"""report.py's reading, plotting, tables and run scheduling, on small fake event files."""
import os

import pytest

from fewshot import cli
from fewshot.engine import checkpoints
from tools import report


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


def test_finished_runs_are_skipped_and_interrupted_ones_resumed(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(report, 'run_commands', lambda commands, jobs, gpus, logs: ran.extend(commands))
    args = report.parse_args(['--quick', '--out', str(tmp_path), '--data_dir', 'D'])
    steps = report.EXPERIMENTS['protonet_5w5s'][2]
    runs = tmp_path / 'runs'
    os.makedirs(runs / 'protonet_5w5s')
    (runs / 'protonet_5w5s' / f'state{steps - 1}.pt').write_bytes(b'')
    report.train_experiments(['protonet_5w5s'], args)
    assert ran == []
    os.makedirs(runs / 'protonet_5w1s')
    for step in (0, 100):
        (runs / 'protonet_5w1s' / f'state{step}.pt').write_bytes(b'')
    report.train_experiments(['protonet_5w1s', 'maml_inner_lr_0.4'], args)
    resumed, fresh = ran
    assert resumed[:2] == ['python', 'protonet.py'] and resumed[-2:] == ['--checkpoint_step', '100']
    assert '--checkpoint_step' not in fresh and fresh[fresh.index('--inner_lr') + 1] == '0.4'
    assert fresh[fresh.index('--data_dir') + 1] == os.path.abspath('D')


def marker_command(folder, name, seconds=1.0):
    """A command that records when it started and ended, and the GPU it was given."""
    code = (f"import os, time; start = time.time(); time.sleep({seconds}); "
            f"open(os.path.join({str(folder)!r}, {name!r}), 'w').write("
            f"f'{{start}} {{time.time()}} {{os.environ.get(\"CUDA_VISIBLE_DEVICES\")}}')")
    return ['python', '-c', code]


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
    lines = report.paper_table(args).splitlines()
    assert len(lines) == 2 + 8 and lines[2].endswith('| 98.8 ± 0.1 | 98.8 |')
    name, flags = calls['protonet_60w1s_20w1s.csv']
    assert name == 'protonet_60w1s' and flags == ['--num_way', '20', '--num_support', '1', '--num_query', '5',
                                                  '--num_test_tasks', '1000']
    name, flags = calls['maml_5w1s_5w1s.csv']
    assert name == 'maml_5w1s' and flags[-4:] == ['--num_test_tasks', '600', '--num_inner_steps', '3']
