"""torch's CPU threads: --threads auto takes the cores other processes leave free when a run
starts (a thread that shares its core with a busy process slows every step), OMP_NUM_THREADS
or --threads fix the count, and a resumed run keeps the count it was trained with."""
import os
import subprocess
import sys
import time

import pytest
import torch

from fewshot import runtime
from fewshot.engine import checkpoints
from helpers import run_with
from test_protonet import small_learner, synthetic_args, synthetic_sampler


@pytest.fixture(autouse=True)
def threads_restored():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize('cores, busy, threads', [(2, 0.0, 2), (2, 0.3, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 2.0, 1),
                                                  (8, 1.0, 7), (8, 2.4, 6), (1, 0.0, 1)])
def test_threads_take_the_cores_others_leave_free(cores, busy, threads):
    assert runtime.threads_for(cores, busy) == threads


def test_auto_measures_a_busy_process_and_leaves_it_its_core(monkeypatch):
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    other = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    try:
        time.sleep(0.3)
        busy = runtime.cpu_seconds_of_others(0.5)
        count, why = runtime.choose_threads('auto')
    finally:
        other.kill()
        other.wait()
    assert busy >= 0.7, busy
    cores = os.cpu_count()
    assert count == torch.get_num_threads() == max(1, min(cores - 1, runtime.threads_for(cores, busy)))
    assert 'other processes keeping' in why


def test_omp_num_threads_and_the_flag_fix_the_count(monkeypatch):
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    assert runtime.choose_threads('auto') == (1, 'as OMP_NUM_THREADS says') and torch.get_num_threads() == 1
    assert runtime.choose_threads(2)[0] == 2 and torch.get_num_threads() == 2


def test_a_run_records_its_count_and_a_resumed_run_keeps_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('OMP_NUM_THREADS', '2')
    run_with(synthetic_args(num_train_iterations=2, threads=1), str(tmp_path), small_learner, synthetic_sampler)
    assert checkpoints.load(str(tmp_path), 1)['args']['threads'] == 1
    torch.set_num_threads(2)
    run_with(synthetic_args(num_train_iterations=4), str(tmp_path), small_learner, synthetic_sampler,
             given={'num_train_iterations'})  # --threads not given: the trained count
    assert checkpoints.load(str(tmp_path), 3)['args']['threads'] == 1 and torch.get_num_threads() == 1
    run_with(synthetic_args(num_train_iterations=1), str(tmp_path / 'auto'), small_learner, synthetic_sampler,
             given=set())
    assert checkpoints.load(str(tmp_path / 'auto'), 0)['args']['threads'] == 2  # auto: OMP_NUM_THREADS
    assert 'threads: 2 (as OMP_NUM_THREADS says)' in capsys.readouterr().out
