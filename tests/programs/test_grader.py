"""grader.py: every check passes on this code and fails on a deliberately broken copy."""
import os
import subprocess
import sys

import pytest

import conftest

import grader

ROOT = conftest.ROOT

# check id -> Python run before grading, breaking what that check grades
BREAKAGES = {
    '1a-0-basic': '''
from fewshot import tasks
real = tasks.task_batch_from_draws
def broken(picked, k):  # support labels in the wrong order
    batch = real(picked, k)
    batch.labels_support = batch.labels_support.flip(-1)
    return batch
tasks.task_batch_from_draws = broken
''',
    '1a-1-basic': '''
from fewshot import tasks
real = tasks.task_batch_from_draws
def broken(picked, k):  # the first query drawing repeats a support drawing
    picked = picked.clone()
    picked[:, :, k] = picked[:, :, 0]
    return real(picked, k)
tasks.task_batch_from_draws = broken
''',
    '2a-0-basic': '''
import torch
import protonet
real = torch.Tensor.square
def broken(self, batch):  # absolute differences summed instead of squared distances
    torch.Tensor.square = torch.Tensor.abs
    try:
        return real_step(self, batch)
    finally:
        torch.Tensor.square = real
real_step = protonet.ProtoNet._step
protonet.ProtoNet._step = broken
''',
    '3a-0-basic': '''
import maml
real = maml.MAML._inner_loop
maml.MAML._inner_loop = lambda self, images, labels, train: real(self, images, labels, False)  # never a graph
''',
    '3a-1-basic': '''
import maml
real = maml.MAML._outer_step
def broken(self, batch, train):  # a (1,) loss instead of a scalar
    loss, *accuracies = real(self, batch, train)
    return (loss.reshape(1), *accuracies)
maml.MAML._outer_step = broken
''',
    '3b-0-basic': '''
import maml
real = maml.MAML.__init__
def broken(self, *args, **kwargs):  # silently first-order
    real(self, *args, **kwargs)
    self.first_order = True
maml.MAML.__init__ = broken
''',
    '3c-0-basic': '''
import maml
real = maml.MAML.__init__
def broken(self, *args, **kwargs):  # the learned rates are cut from the graph
    real(self, *args, **kwargs)
    for rate in self.inner.inner_lrs.values():
        rate.requires_grad_(False)
maml.MAML.__init__ = broken
''',
}


def run_grader(prelude, *check_ids):
    code = prelude + f'\nimport grader, sys\nsys.exit(grader.main({list(check_ids)!r}))\n'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=300)


def check_line(output, check_id):
    return next(line for line in output.splitlines() if line.startswith(check_id))


def test_every_check_has_a_breakage():
    assert set(BREAKAGES) == set(grader.CHECKS)


@pytest.mark.slow
def test_all_checks_pass_on_this_code():
    result = run_grader('')
    assert result.returncode == 0, result.stdout + result.stderr
    total = sum(points for _, points, _ in grader.CHECKS.values())
    assert result.stdout.splitlines()[-1].split()[-1] == f'{total}/{total}'
    assert len(result.stdout.splitlines()) == len(grader.CHECKS) + 1


@pytest.mark.parametrize('check_id', sorted(BREAKAGES))
@pytest.mark.slow
def test_check_fails_on_a_broken_implementation(check_id):
    result = run_grader(BREAKAGES[check_id], check_id)
    points = grader.CHECKS[check_id][1]
    assert result.returncode == 1, result.stdout + result.stderr
    line = check_line(result.stdout, check_id)
    assert f' 0/{points}  FAILED: ' in line, line


def test_unknown_check_is_a_one_line_error():
    result = run_grader('', 'no-such-check')
    assert result.returncode == 2
    assert result.stderr.strip().startswith('error: unknown check no-such-check; choose from 1a-0-basic')
