"""The course's methods are what the programs run: an edit to ProtoNet._step, MAML._inner_loop or
MAML._outer_step changes what trains, validates and tests, with default flags. The library's faster
ways run only when asked (--fast, or a flag that batches tasks), saying so. Through the real
programs: a copy of the course file edited in place (a subprocess), and subclasses handed to
the engine as the programs hand theirs."""
import os
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import conftest
import maml
import protonet
import run_metabolism
from fewshot import cli

ROOT = conftest.ROOT
TINY_MAML = ['--dataset', 'sinusoid', '--num_train_iterations', '2', '--num_val_tasks', '2', '--val_interval', '1']
TINY_OMNIGLOT = ['--num_train_iterations', '1', '--num_val_tasks', '2', '--batch_size', '2']


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
def test_an_edit_to_a_maml_method_is_what_runs_with_default_flags(tmp_path, omniglot_dir, method):
    path = edited_copy(tmp_path, 'maml.py', method, 'raise SystemExit("called")')
    for flags in (TINY_MAML, ['--data_dir', omniglot_dir, *TINY_OMNIGLOT]):
        result = run_program(path, *flags, '--log_dir', str(tmp_path / 'logs' / flags[1]), cwd=tmp_path)
        assert result.returncode == 1 and result.stderr.strip().endswith('called'), result.stdout + result.stderr
        assert 'the library computes the steps' not in result.stdout


@pytest.mark.slow
def test_an_edit_to_protonets_step_is_what_runs_with_default_flags(tmp_path, omniglot_dir):
    path = edited_copy(tmp_path, 'protonet.py', '_step', 'raise SystemExit("called")')
    result = run_program(path, '--data_dir', omniglot_dir, *TINY_OMNIGLOT, '--log_dir', str(tmp_path / 'logs'),
                         cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.strip().endswith('called'), result.stdout + result.stderr


class DoubledLoss(maml.MAML):
    """A student's _outer_step whose loss is twice the course's."""

    def _outer_step(self, task_batch, train):
        loss, *accuracies = super()._outer_step(task_batch, train)
        return (2 * loss, *accuracies)


class LongerInnerStep(maml.MAML):
    """A student's _inner_loop whose step goes twice as far from the meta-parameters."""

    def _inner_loop(self, images, labels, train, every_step=False):
        parameters, accuracies, gradients = super()._inner_loop(images, labels, train)
        meta = self.meta_parameters
        return {k: meta[k] + 2 * (v - meta[k]) for k, v in parameters.items()}, accuracies, gradients


class RaisingStep(protonet.ProtoNet):
    def _step(self, task_batch):
        raise RuntimeError('a student step')


def first_logged_loss(log_dir):
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return events.Scalars('loss/train')[0].value


def train_with(tmp_path, name, learner):
    """Train TINY_MAML with learner as the program's MAML."""
    log_dir = tmp_path / name
    cli.main(maml.PROGRAM, [*TINY_MAML, '--seed', '1', '--log_dir', str(log_dir)], {'maml': learner})
    return log_dir


def test_a_subclass_handed_to_the_engine_changes_the_logged_loss(tmp_path):
    plain = first_logged_loss(train_with(tmp_path, 'plain', maml.MAML))
    doubled = first_logged_loss(train_with(tmp_path, 'doubled', DoubledLoss))
    longer = first_logged_loss(train_with(tmp_path, 'longer', LongerInnerStep))
    assert doubled == pytest.approx(2 * plain, rel=1e-6)
    assert abs(longer - plain) > 1e-3 * plain


@pytest.mark.parametrize('flags, through_inner_loop', [([], True), (['--group_tasks', 'yes'], False),
                                                       (['--fast', '--group_tasks', 'yes'], False)])
def test_the_library_adapts_tasks_at_once_only_when_asked(monkeypatch, tmp_path, omniglot_dir, capsys, flags,
                                                          through_inner_loop):
    """By default every task goes through _inner_loop (Omniglot's grouped tasks would be faster);
    a flag that batches tasks, or --fast, runs the library's implementation, which says so."""
    called = []
    monkeypatch.setattr(LongerInnerStep, '_inner_loop', lambda self, *args, **kwargs: called.append(1) or
                        maml.MAML._inner_loop(self, *args, **kwargs))
    cli.main(maml.PROGRAM, ['--data_dir', omniglot_dir, *TINY_OMNIGLOT, '--channels_last', 'no', *flags,
                            '--log_dir', str(tmp_path / 'logs')], {'maml': LongerInnerStep})
    assert len(called) == (2 + 2 if through_inner_loop else 0)  # two training tasks, two validation tasks
    assert ('the library computes the steps' in capsys.readouterr().out) != through_inner_loop


def test_a_raising_step_fails_the_program(tmp_path, omniglot_dir):
    with pytest.raises(RuntimeError, match='a student step'):
        cli.main(protonet.PROGRAM, ['--data_dir', omniglot_dir, *TINY_OMNIGLOT, '--log_dir', str(tmp_path / 'logs')],
                 {'protonet': RaisingStep})


def test_the_step_is_evaluated_task_by_task_and_fast_scores_the_same_at_once():
    """Evaluation calls _step once a task; --fast's evaluation of the meta-batch at once gives the same
    per-task accuracies (and each task the batch's loss)."""
    from test_protonet import random_batch, tiny_encoder
    calls = []

    class Counting(protonet.ProtoNet):
        def _step(self, task_batch):
            calls.append(len(task_batch))
            return super()._step(task_batch)
    torch.manual_seed(0)
    encoder = tiny_encoder()
    batch = random_batch(num_tasks=3)
    course, fast = Counting(encoder), protonet.ProtoNet(encoder, fast=True)
    assert not course.notice and fast.notice.startswith('the library computes the steps')
    got, expected = course.evaluate(batch), fast.evaluate(batch)
    assert calls == [1, 1, 1]
    for k in ('support', 'query'):
        torch.testing.assert_close(got[k].to(expected[k].dtype), expected[k], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got['loss'].mean(), expected['loss'][0])  # each task's loss; the batch's mean


@pytest.mark.parametrize('program, argv, expected', [
    ('python -m fewshot', ['--algorithm', 'maml', '--dataset', 'sinusoid'], maml.MAML),
    ('python -m fewshot', ['--algorithm', 'protonet', '--dataset', 'metabolism'], protonet.ProtoNet),
    ('python -m fewshot', ['--algorithm', 'reptile', '--dataset', 'sinusoid'], maml.Reptile),
    ('run_metabolism.py', ['--algorithm', 'maml'], maml.MAML),
    ('run_metabolism.py', [], protonet.ProtoNet)])
def test_every_program_builds_the_course_classes(program, argv, expected):
    import fewshot.__main__ as launcher
    module = launcher if program == 'python -m fewshot' else run_metabolism
    command = cli.parse(module.PROGRAM if module is run_metabolism else launcher.registry.program(program), argv,
                        module.LEARNERS)
    assert type(command.build_learner(command.args, 'cpu')) is expected


def test_reptile_evaluates_through_the_courses_outer_step():
    command = cli.parse(maml.PROGRAM, ['--algorithm', 'reptile', '--dataset', 'sinusoid'], maml.LEARNERS)
    learner = command.build_learner(command.args, 'cpu')
    assert isinstance(learner, maml.MAML) and learner._outer_step.__func__ is maml.MAML._outer_step
    assert not learner.notice
