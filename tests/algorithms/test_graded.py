"""The course's graded methods are what the programs run: an edit to ProtoNet._step,
MAML._inner_loop or MAML._outer_step changes what trains, validates and tests, and an edited
method turns the faster ways off, saying so. Through the real programs: a copy of the course
file edited in place (a subprocess), and a subclass registered in registry.LEARNERS."""
import os
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import conftest
import maml
import protonet
from fewshot import registry
from fewshot.algorithms import graded

ROOT = conftest.ROOT
TINY_MAML = ['--dataset', 'sinusoid', '--num_train_iterations', '2', '--num_val_tasks', '2', '--val_interval', '1']


def test_the_shipped_methods_are_the_tested_ones():
    """Fails when a shipped graded method changes: run the equality tests (tests/algorithms/test_maml.py,
    test_grouped_tasks.py, test_protonet.py), then record the printed fingerprint."""
    shipped = {'ProtoNet._step': protonet.ProtoNet._step, 'MAML._inner_loop': maml.MAML._inner_loop,
               'MAML._outer_step': maml.MAML._outer_step}
    assert {name: graded.fingerprint(method) for name, method in shipped.items()} == graded.TESTED


def test_a_fingerprint_ignores_docstrings_comments_and_layout():
    def step(self, batch):
        """One docstring."""
        return self.loss(batch)  # a comment

    def same(self,   batch):
        return self.loss(
            batch)

    def other(self, batch):
        return 2 * self.loss(batch)

    def nested(self, batch):
        if batch:
            return 1
            return 2
    assert graded.fingerprint(step) == graded.fingerprint(same) != graded.fingerprint(other)
    assert graded.fingerprint(nested) != graded.fingerprint(edited_indentation(nested))


def edited_indentation(function):
    """function with its last line dedented one level, compiled from its source."""
    import inspect
    import linecache
    import textwrap
    lines = textwrap.dedent(inspect.getsource(function)).splitlines()
    lines[-1] = lines[-1][4:]
    source, name = '\n'.join(lines) + '\n', f'<edited {function.__name__}>'
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    scope = {}
    exec(compile(source, name, 'exec'), scope)
    return scope[function.__name__]


def edited_copy(tmp_path, course_file, method, first_line):
    """A copy of a course file whose method starts with first_line (as a student's edit would)."""
    source = open(os.path.join(ROOT, course_file)).read()
    header = f'    def {method}('
    start = source.index(header)
    body = source.index('"""', source.index('"""', start) + 3) + 3  # after the docstring
    edited = source[:body] + f'\n        {first_line}' + source[body:]
    path = tmp_path / course_file
    path.write_text(edited)
    return path


def run_program(path, *args, cwd):
    env = {**os.environ, 'PYTHONPATH': ROOT}
    return subprocess.run([sys.executable, str(path), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize('method', ['_inner_loop', '_outer_step'])
@pytest.mark.slow
def test_an_edit_to_a_maml_method_is_what_runs(tmp_path, method):
    path = edited_copy(tmp_path, 'maml.py', method, 'raise SystemExit("called")')
    result = run_program(path, *TINY_MAML, '--log_dir', str(tmp_path / 'logs'), cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.strip().endswith('called'), result.stdout + result.stderr
    assert f'MAML.{method} is not the shipped code' in result.stdout


@pytest.mark.slow
def test_an_edit_to_protonets_step_is_what_runs(tmp_path, omniglot_dir):
    path = edited_copy(tmp_path, 'protonet.py', '_step', 'raise SystemExit("called")')
    result = run_program(path, '--data_dir', omniglot_dir, '--num_train_iterations', '1', '--num_val_tasks', '2',
                         '--batch_size', '2', '--log_dir', str(tmp_path / 'logs'), cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.strip().endswith('called'), result.stdout + result.stderr


@pytest.mark.slow
def test_a_comment_in_a_graded_method_keeps_the_faster_ways(tmp_path):
    path = edited_copy(tmp_path, 'maml.py', '_inner_loop', '# a student\'s note')
    result = run_program(path, *TINY_MAML, '--log_dir', str(tmp_path / 'logs'), cwd=tmp_path)
    assert result.returncode == 0 and 'is not the shipped code' not in result.stdout, result.stderr


class DoubledLoss(maml.MAML):
    """A student's _outer_step whose loss is twice the course's."""

    def _outer_step(self, task_batch, train):
        loss, *accuracies = super()._outer_step(task_batch, train)
        return (2 * loss, *accuracies)


class LongerInnerStep(maml.MAML):
    """A student's _inner_loop whose step goes twice as far from the meta-parameters."""

    def _inner_loop(self, images, labels, train):
        parameters, accuracies, gradients = super()._inner_loop(images, labels, train)
        meta = self.inner.meta_parameters
        return {k: meta[k] + 2 * (v - meta[k]) for k, v in parameters.items()}, accuracies, gradients


class RaisingStep(protonet.ProtoNet):
    def _step(self, task_batch):
        raise RuntimeError('a student step')


def first_logged_loss(log_dir):
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return events.Scalars('loss/train')[0].value


def train_with(monkeypatch, tmp_path, name, learner, extra=()):
    """Train TINY_MAML (Omniglot's grouped tasks forced on where extra asks) with learner registered."""
    if learner is not None:
        monkeypatch.setitem(registry.LEARNERS, 'maml', f'test_graded:{learner}')
    log_dir = tmp_path / name
    maml.main([*TINY_MAML, '--seed', '1', '--log_dir', str(log_dir), *extra])
    return log_dir


def test_a_subclass_registered_changes_the_logged_loss(monkeypatch, tmp_path, capsys):
    plain = first_logged_loss(train_with(monkeypatch, tmp_path, 'plain', None))
    assert 'is not the shipped code' not in capsys.readouterr().out
    doubled = first_logged_loss(train_with(monkeypatch, tmp_path, 'doubled', 'DoubledLoss'))
    assert 'MAML._outer_step is not the shipped code' in capsys.readouterr().out
    longer = first_logged_loss(train_with(monkeypatch, tmp_path, 'longer', 'LongerInnerStep'))
    assert doubled == pytest.approx(2 * plain, rel=1e-6)
    assert abs(longer - plain) > 1e-3 * plain


def test_an_edited_method_turns_grouped_tasks_off(monkeypatch, tmp_path, omniglot_dir, capsys):
    """--group_tasks yes would adapt all tasks at once, past _inner_loop: with an edited
    _inner_loop the tasks go one by one through it."""
    monkeypatch.setitem(registry.LEARNERS, 'maml', 'test_graded:LongerInnerStep')
    called = []
    monkeypatch.setattr(LongerInnerStep, '_inner_loop', lambda self, *args: called.append(1) or
                        super(LongerInnerStep, self)._inner_loop(*args))
    maml.main(['--data_dir', omniglot_dir, '--group_tasks', 'yes', '--channels_last', 'no', '--num_train_iterations', '1',
               '--num_val_tasks', '2', '--batch_size', '2', '--log_dir', str(tmp_path / 'logs')])
    assert len(called) == 2 + 2  # two training tasks, two validation tasks
    assert 'is not the shipped code' in capsys.readouterr().out


def test_a_raising_step_fails_the_program(monkeypatch, tmp_path, omniglot_dir):
    monkeypatch.setitem(registry.LEARNERS, 'protonet', 'test_graded:RaisingStep')
    with pytest.raises(RuntimeError, match='a student step'):
        protonet.main(['--data_dir', omniglot_dir, '--num_train_iterations', '1', '--num_val_tasks', '2',
                       '--batch_size', '2', '--log_dir', str(tmp_path / 'logs')])


def test_an_edited_step_is_evaluated_task_by_task(monkeypatch):
    """Evaluation of an edited _step calls it once a task, and its per-task accuracies are
    those the shipped step's batched evaluation gives (which gives each task the batch's loss)."""
    from test_protonet import random_batch, tiny_encoder
    calls = []

    class Counting(protonet.ProtoNet):
        def _step(self, task_batch):
            calls.append(len(task_batch))
            return super()._step(task_batch)
    torch.manual_seed(0)
    encoder = tiny_encoder()
    batch = random_batch(num_tasks=3)
    edited, shipped = Counting(encoder), protonet.ProtoNet(encoder)
    assert edited.notice and not shipped.notice
    got, expected = edited.evaluate(batch), shipped.evaluate(batch)
    assert calls == [1, 1, 1]
    for k in ('support', 'query'):
        torch.testing.assert_close(got[k].to(expected[k].dtype), expected[k], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got['loss'].mean(), expected['loss'][0])  # each task's loss; the batch's mean


@pytest.mark.parametrize('program, argv, expected', [
    ('python -m fewshot', ['--algorithm', 'maml', '--dataset', 'sinusoid'], maml.MAML),
    ('python -m fewshot', ['--algorithm', 'protonet', '--dataset', 'metabolism'], protonet.ProtoNet),
    ('run_metabolism.py', ['--algorithm', 'maml'], maml.MAML),
    ('run_metabolism.py', [], protonet.ProtoNet)])
def test_every_program_builds_the_course_classes(program, argv, expected):
    from fewshot import cli
    command = cli.parse(registry.program(program), argv)
    assert type(command.build_learner(command.args, 'cpu')) is expected


def test_reptile_evaluates_through_the_courses_outer_step():
    from fewshot import cli
    command = cli.parse(maml.PROGRAM, ['--algorithm', 'reptile', '--dataset', 'sinusoid'])
    learner = command.build_learner(command.args, 'cpu')
    assert isinstance(learner, maml.MAML) and not learner.notice
