"""What a long run meets: SIGINT and SIGTERM save the step in progress and resume exactly
(one process and two under torchrun), a diverging run stops before a non-finite step, a
failed checkpoint write is one line that names the one kept, a log dir holds one run
(re-running continues it, other settings are refused) and one writer (an OS lock that a
killed process does not leave behind)."""
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

import conftest
import torch

import maml
from fewshot import cli
from fewshot.engine import checkpoints, loop
from fewshot.errors import UserError
from helpers import run_with
from test_protonet import small_learner, synthetic_args, synthetic_sampler

ROOT = conftest.ROOT
ENV = dict(os.environ, OMP_NUM_THREADS='1')  # one thread count for every run compared bit for bit
TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2']
SINE = ['--dataset', 'sinusoid', '--num_val_tasks', '4', '--vmap_tasks', 'no', '--batch_size', '4']


def start(log_dir, *flags, program='maml.py', launcher=()):
    """A training run in the background, its output read line by line."""
    command = [*launcher, sys.executable, '-u', program, *SINE, '--log_dir', str(log_dir), *flags] if not launcher \
        else [*launcher, program, *SINE, '--log_dir', str(log_dir), *flags]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, start_new_session=bool(launcher))


def wait_for_checkpoint(log_dir, process, timeout=120):
    """Wait until the run has saved its first checkpoint (it is in its loop)."""
    deadline = time.time() + timeout
    while not os.path.exists(checkpoints.path(str(log_dir), 0)):
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, 'the run did not start'
        time.sleep(0.05)


def weights(log_dir, step):
    return checkpoints.load(str(log_dir), step)['learner']['meta_parameters']


def assert_same_weights(a, b):
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def two_workers_training(log_dir):
    """A long sinusoid run under torchrun, two gloo workers, in its loop: (torchrun, the workers' pids)."""
    run = start(log_dir, '--num_train_iterations', '100000', launcher=TORCHRUN)
    wait_for_checkpoint(log_dir, run)
    workers = subprocess.run(['pgrep', '-P', str(run.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2
    return run, workers


@pytest.mark.parametrize('number, status', [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
@pytest.mark.slow
def test_a_signal_saves_the_step_in_progress_and_the_run_resumes_exactly(tmp_path, number, status):
    steps = ['--num_train_iterations', '300']
    interrupted = start(tmp_path / 'interrupted', *steps)
    wait_for_checkpoint(tmp_path / 'interrupted', interrupted)
    interrupted.send_signal(number)
    out, err = interrupted.communicate(timeout=120)
    assert interrupted.returncode == status, err
    found = re.search(r'interrupted at step (\d+); saved state(\d+)\.pt; resume with: (.*)', out)
    assert found and found.group(1) == found.group(2), out
    stopped, resume = int(found.group(1)), found.group(3)
    assert 0 < stopped < 299 and checkpoints.saved_steps(str(tmp_path / 'interrupted'))[-1] == stopped
    assert f'--checkpoint_step {stopped}' in resume and resume.startswith('python maml.py')
    resumed = subprocess.run([sys.executable, *shlex.split(resume)[1:]], cwd=ROOT, capture_output=True, text=True,
                             timeout=300, env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    straight = subprocess.run([sys.executable, 'maml.py', *SINE, *steps, '--log_dir', str(tmp_path / 'straight')],
                              cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert straight.returncode == 0, straight.stderr
    assert_same_weights(weights(tmp_path / 'interrupted', 299), weights(tmp_path / 'straight', 299))


@pytest.mark.slow
def test_a_signal_during_a_long_validation_saves_and_exits_within_seconds(tmp_path):
    """What bounds the wait after Ctrl-C: one training step and one save; a validation in progress
    (here 400000 tasks, minutes long) is cut short and the step saved unscored."""
    run = start(tmp_path, '--num_train_iterations', '300', '--num_val_tasks', '400000')
    while 'logging to' not in run.stdout.readline():
        assert run.poll() is None, run.communicate()
    time.sleep(1.0)  # inside step 0's validation
    run.send_signal(signal.SIGINT)
    sent = time.time()
    out, err = run.communicate(timeout=120)
    waited = time.time() - sent
    assert run.returncode == 130 and 'interrupted at step 0; saved state0.pt' in out, out + err
    assert waited < 5, f'{waited:.1f} s from the signal to the exit'
    assert math.isnan(checkpoints.load(str(tmp_path), 0)['val_score'])


@pytest.mark.slow
def test_a_diverging_run_stops_in_one_line_before_a_non_finite_step(tmp_path):
    result = subprocess.run([sys.executable, 'maml.py', *SINE, '--inner_lr', '1e30', '--log_dir', str(tmp_path),
                             '--num_train_iterations', '50'], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert re.fullmatch(r'error: step 0: the (loss|gradient of a .* parameter tensor) is not finite: the run stopped '
                        r'before applying it \(no checkpoint was written\); lower --learning_rate .*',
                        result.stderr.strip().splitlines()[-1]), result.stderr
    assert checkpoints.saved_steps(str(tmp_path)) == []


def test_checkpoints_before_a_divergence_are_kept_finite_and_test_picks_one(tmp_path, monkeypatch):
    real = loop.backward_in_groups

    def diverging(learner, tasks, step, *rest):
        objective, metrics = real(learner, tasks, step, *rest)
        if step >= 3:
            for tensor in learner.parameters():
                tensor.grad = torch.full_like(tensor, math.nan)
        return objective, metrics
    monkeypatch.setattr(loop, 'backward_in_groups', diverging)
    monkeypatch.setattr(loop, 'SAVE_INTERVAL', 2)
    with pytest.raises(UserError, match=r'step 3: the gradient of a \(.*\) parameter tensor is not finite: the run '
                                        r'stopped before applying it \(the latest checkpoint, .*state2.pt, holds '
                                        r'finite weights\)'):
        run_with(synthetic_args(num_train_iterations=8), str(tmp_path), small_learner, synthetic_sampler)
    assert checkpoints.saved_steps(str(tmp_path)) == [0, 2]
    assert all(t.isfinite().all() for s in (0, 2) for t in checkpoints.load(str(tmp_path), s)['learner']['network'].values())
    assert checkpoints.best_step(str(tmp_path)) in (0, 2)


def test_a_failed_checkpoint_write_names_the_checkpoint_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, 'SAVE_INTERVAL', 2)
    real, saved = torch.save, []

    def full_disk(obj, f):
        if saved:
            f.write(b'part of it')
            raise OSError(28, 'No space left on device')
        saved.append(obj['step'])
        real(obj, f)
    monkeypatch.setattr(torch, 'save', full_disk)
    with pytest.raises(UserError, match=r'could not write .*state2.pt \(No space left on device\); the last complete '
                                        r'checkpoint is .*state0.pt; free space and resume with --checkpoint_step 0'):
        run_with(synthetic_args(num_train_iterations=6), str(tmp_path), small_learner, synthetic_sampler)
    monkeypatch.undo()
    assert checkpoints.load(str(tmp_path), 0)['step'] == 0
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith('.') or n.startswith('state')) == ['state0.pt']


def test_a_log_dir_holds_one_run(tmp_path, capsys):
    run_with(synthetic_args(num_train_iterations=3), str(tmp_path), small_learner, synthetic_sampler)
    finished = os.path.getmtime(checkpoints.path(str(tmp_path), 2))
    run_with(synthetic_args(num_train_iterations=3), str(tmp_path), small_learner, synthetic_sampler)
    assert 'has finished' in capsys.readouterr().out and os.path.getmtime(checkpoints.path(str(tmp_path), 2)) == finished
    run_with(synthetic_args(num_train_iterations=5), str(tmp_path), small_learner, synthetic_sampler)  # train on
    assert 'resuming from' in capsys.readouterr().out and checkpoints.saved_steps(str(tmp_path)) == [0, 2, 4]
    with pytest.raises(UserError, match=r'holds another run .*state4.pt, was trained with --learning_rate 0.01 '
                                        r'\(now 0.5\)\); resume it with --checkpoint_step 4 and its settings, or '
                                        'choose another --log_dir'):
        run_with(synthetic_args(num_train_iterations=5, learning_rate=0.5), str(tmp_path), small_learner,
                 synthetic_sampler)


@pytest.mark.slow
def test_a_second_writer_is_refused_and_a_killed_ones_lock_is_not_left(tmp_path):
    first = start(tmp_path, '--num_train_iterations', '100000')
    wait_for_checkpoint(tmp_path, first)
    second = subprocess.run([sys.executable, 'maml.py', *SINE, '--log_dir', str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 2
    assert second.stderr == (f'error: --log_dir {tmp_path} is in use by process {first.pid}, which is training in it; '
                             'wait for it to end, or choose another --log_dir\n')
    test = subprocess.run([sys.executable, 'maml.py', '--test', '--log_dir', str(tmp_path), '--num_test_tasks', '4',
                           '--checkpoint_step', '0'], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert test.returncode == 0 and 'Loss over 4 test tasks' in test.stdout  # reading it is fine
    assert first.poll() is None  # unharmed
    first.kill()  # no chance to clean up: the kernel releases its lock
    first.communicate()
    steps = checkpoints.saved_steps(str(tmp_path))
    again = subprocess.run([sys.executable, 'maml.py', *SINE, '--log_dir', str(tmp_path), '--num_train_iterations',
                            str(steps[-1] + 3)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f'resuming from {checkpoints.path(str(tmp_path), steps[-1])}' in again.stdout
    assert not os.path.exists(tmp_path / '.lock')


@pytest.mark.slow
def test_sigterm_to_torchrun_leaves_one_checkpoint_that_resumes_in_one_process(tmp_path):
    run, _ = two_workers_training(tmp_path)
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=120)
    found = re.search(r'interrupted at step (\d+); saved state\1\.pt', out)
    assert found, out + err
    stopped = int(found.group(1))
    assert checkpoints.saved_steps(str(tmp_path))[-1] == stopped and run.returncode != 0
    resumed = subprocess.run([sys.executable, 'maml.py', *SINE, '--log_dir', str(tmp_path),
                              '--checkpoint_step', str(stopped), '--num_train_iterations', str(stopped + 3)],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert checkpoints.saved_steps(str(tmp_path))[-1] == stopped + 2


def test_the_resume_line_repeats_the_command_with_the_step():
    command = cli.parse(maml.PROGRAM, ['--dataset', 'sinusoid', '--checkpoint_step', '3', '--seed', '2'])
    assert command.resume_line(7) == (f'python maml.py --dataset sinusoid --seed 2 --log_dir {command.log_dir} '
                                      '--checkpoint_step 7')


def test_a_failed_csv_write_is_one_line(tmp_path, monkeypatch):
    import csv
    run_with(synthetic_args(num_train_iterations=1), str(tmp_path), small_learner, synthetic_sampler)

    def full_disk(self, row):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(csv.DictWriter, 'writerow', full_disk)
    table = str(tmp_path / 'results.csv')
    with pytest.raises(UserError, match=r'could not append to --csv .*results.csv \(No space left on device\)'):
        run_with(synthetic_args(test=True, num_test_tasks=4, csv=table), str(tmp_path), small_learner,
                 synthetic_sampler)


@pytest.mark.slow
def test_sigterm_to_one_torchrun_process_stops_both_after_the_same_step(tmp_path):
    """The request to stop is agreed in the gradient all-reduce: a signal to one worker stops both."""
    run, workers = two_workers_training(tmp_path)
    os.kill(int(workers[-1]), signal.SIGTERM)
    out, err = run.communicate(timeout=120)
    found = re.search(r'interrupted at step (\d+); saved state\1\.pt', out)
    assert found, out + err
    assert checkpoints.saved_steps(str(tmp_path))[-1] == int(found.group(1))


@pytest.mark.slow
def test_a_killed_torchrun_worker_ends_the_job_and_the_same_command_resumes(tmp_path):
    """kill -9 of one gloo worker: the job ends within 60 s (not a hang), the checkpoints on disk are
    intact (their checksums hold), and the same command resumes from the last of them."""
    run, workers = two_workers_training(tmp_path)
    os.kill(int(workers[-1]), signal.SIGKILL)
    killed = time.time()
    try:
        _, err = run.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        pytest.fail('the job hung for 60 s after a worker was killed')
    assert run.returncode != 0 and time.time() - killed < 60
    assert 'exitcode  : -9' in err and 'rank      : 1' in err  # torchrun names the failed rank
    saved = checkpoints.saved_steps(str(tmp_path))
    assert saved and all(checkpoints.load(str(tmp_path), step)['step'] == step for step in saved)
    again = start(tmp_path, '--num_train_iterations', str(saved[-1] + 3), launcher=TORCHRUN)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert f'resuming from {checkpoints.path(str(tmp_path), saved[-1])}' in out
    assert checkpoints.saved_steps(str(tmp_path))[-1] == saved[-1] + 2
