"""MAML's grouped tasks (--group_tasks): the conv net's grouped version against conv_net task by
task, the meta-gradients and evaluation against the per-task loop, the memory gate of its trial,
and the flag's refusals."""
import pytest
import torch

import maml
from fewshot import cli, networks
from fewshot.algorithms import maml as maml_algorithm
from fewshot.algorithms.inner_loop import Variants
from fewshot.engine import loop, tuning
from fewshot.errors import UserError
from test_maml import copy_of, meta_gradients, random_batch, tiny_maml


def per_task_parameters(num_tasks, seed=0):
    """num_tasks different parameter sets of a 3-block conv net, stacked: {key: (T, *shape)}."""
    torch.manual_seed(seed)
    sets = [networks.init_conv_params(3, 2, 5, num_outputs=4, dtype=torch.float64, positions=9)
            for _ in range(num_tasks)]
    for params in sets:
        for k, v in params.items():
            if k.startswith('bn') or k.endswith('bias'):
                v.uniform_(-0.5, 1.5)
    return sets, {k: torch.stack([params[k] for params in sets]) for k in sets[0]}


@pytest.mark.parametrize('channels_last', [False, True])
def test_the_grouped_net_is_conv_net_task_by_task(channels_last):
    """Each task with its own parameters, its own batch-norm statistics and a 3x3 feature map
    (the head's input order matters), two input channels."""
    sets, stacked = per_task_parameters(3)
    images = torch.rand(3, 7, 2, 24, 24, dtype=torch.float64)
    grouped = networks.grouped_conv_net(stacked, images, channels_last=channels_last)
    expected = torch.stack([networks.conv_net(params, x, num_blocks=3) for params, x in zip(sets, images)])
    assert grouped.shape == (3, 7, 4)
    torch.testing.assert_close(grouped, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('options', [dict(num_inner_steps=2, learn_inner_lrs=True),
                                     dict(num_inner_steps=1, first_order=True),
                                     dict(num_inner_steps=2, anil=True),
                                     dict(num_inner_steps=2, inner_optimizer='adagrad', multi_step_loss=True,
                                          num_train_iterations=10)])
def test_grouped_tasks_agree_with_the_per_task_loop(options):
    """Loss, per-task metrics, meta-gradients (inner LRs included) and evaluation, in float64;
    the loop is checked against finite differences and an nn.Module oracle (test_maml.py)."""
    per_task = tiny_maml(**options)
    grouped = copy_of(per_task, **options)
    grouped.inner.group_tasks = True
    batch = random_batch(num_tasks=3)
    loss_a, metrics_a, grads_a = meta_gradients(per_task, batch)
    loss_b, metrics_b, grads_b = meta_gradients(grouped, batch)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-12, atol=0)
    for k in metrics_a:
        assert metrics_b[k].shape == (3,) and torch.equal(metrics_b[k].to(metrics_a[k].dtype), metrics_a[k]), k
    for k in grads_a:
        torch.testing.assert_close(grads_b[k], grads_a[k], rtol=1e-9, atol=1e-13, msg=k)
    evaluated_a, evaluated_b = per_task.evaluate(batch), grouped.evaluate(batch)
    for k in evaluated_a:
        torch.testing.assert_close(evaluated_b[k].to(evaluated_a[k].dtype), evaluated_a[k], rtol=1e-10, atol=0)
    assert not any(v.requires_grad for v in evaluated_b.values())


def test_a_grouped_step_in_groups_is_the_same_step():
    """The training loop's backward per group of tasks_per_group tasks sums to the whole batch's gradient."""
    whole = tiny_maml(num_inner_steps=2)
    whole.inner.group_tasks = True
    in_twos = copy_of(whole, num_inner_steps=2)
    in_twos.inner.group_tasks, in_twos.tasks_per_group = True, 2
    assert whole.tasks_per_backward == 0 and in_twos.tasks_per_backward == 2
    batch = random_batch(num_tasks=3)
    for learner in (whole, in_twos):
        loop.backward_in_groups(learner, batch, 0, learner.tasks_per_backward, len(batch))
    for k, v in whole.inner.meta_parameters.items():
        torch.testing.assert_close(in_twos.inner.meta_parameters[k].grad, v.grad, rtol=1e-10, atol=1e-15, msg=k)


def test_grouped_tasks_are_offered_where_a_group_of_the_trials_tasks_fits(monkeypatch):
    learner = maml.MAML(networks.init_conv_params(4, 1, 4, num_outputs=3), networks.conv_net,
                                  vmap_tasks=False, channels_last=False, group_tasks=None, fast=True)
    sample = random_batch(num_tasks=4, dtype=torch.float32)
    one_task = learner.graph_bytes(sample)
    first_block = (6 + 9) * 4 * 28 * 28 * 4  # one task's 15 images through the first conv: fp32 bytes
    assert first_block < one_task < 8 * 2 ** 20  # every block's activations, for both passes; not whole batches
    assert list(learner.execution_options(sample)) == ['per-task inner loops', 'tasks as groups of one convolution']
    assert learner.tasks_per_group == maml_algorithm.GROUP_GRAPH_BYTES // one_task
    learner.execution_options(sample)['tasks as groups of one convolution']()
    assert learner.inner.group_tasks and learner.tasks_per_backward == learner.tasks_per_group
    monkeypatch.setattr(maml_algorithm, 'GROUP_GRAPH_BYTES', 3 * one_task)  # a group of 3 < the trial's 4
    assert learner.execution_options(sample) == {}  # the loop, untimed
    bigger = tiny_maml(num_inner_steps=3, dtype=torch.float32)
    assert bigger.graph_bytes(sample) > 1.5 * one_task  # three support passes and the query pass against one and one


def test_tuning_reads_the_gate_on_the_trials_tasks(tmp_path, monkeypatch):
    """choose() gives execution_options the tasks it times: a learner whose group does not fit
    is not timed at all (its other ways forced), one that fits is timed both ways."""
    timed = []
    monkeypatch.setattr(tuning, 'seconds_per_step', lambda learner, batch, repeats=2: timed.append(
        (learner.inner.group_tasks, len(batch))) or (0.1 if learner.inner.group_tasks else 0.2))
    learner = maml.MAML(networks.init_conv_params(4, 1, 4, num_outputs=3), networks.conv_net,
                                  vmap_tasks=False, channels_last=False, group_tasks=None, fast=True)
    sample = lambda: random_batch(num_tasks=6, dtype=torch.float32)  # noqa: E731
    assert tuning.choose(learner, sample, 'fits', str(tmp_path / 't.json')) == 'tasks as groups of one convolution'
    assert timed == [(False, tuning.TUNE_TASKS), (True, tuning.TUNE_TASKS)] and learner.inner.group_tasks
    monkeypatch.setattr(maml_algorithm, 'GROUP_GRAPH_BYTES', 1)
    timed.clear()
    assert tuning.choose(learner, sample, 'does not fit', str(tmp_path / 't.json')) is None and timed == []


def test_group_tasks_refusals():
    command = cli.parse(maml.PROGRAM, ['--dataset', 'sinusoid', '--group_tasks', 'yes'])
    with pytest.raises(UserError, match='--group_tasks yes needs a conv network'):
        command.build_learner(command.args, torch.device('cpu'))
    params = networks.init_conv_params(1, 1, 2, num_outputs=3)
    with pytest.raises(UserError, match='--group_tasks yes and --vmap_tasks yes'):
        maml.MAML(params, networks.conv_net, vmap_tasks=True, group_tasks=True)
    with pytest.raises(UserError, match='--group_tasks yes: --per_step_bn'):
        maml.MAML(params, networks.conv_net, group_tasks=True, variants=Variants(per_step_bn=True))
    assert not maml.MAML(params, networks.conv_net, group_tasks=None, fast=True,
                                   variants=Variants(per_step_bn=True)).inner.group_tunable


def test_a_given_way_of_batching_tasks_is_kept_by_tuning():
    """--vmap_tasks yes: tuning offers no other way of batching tasks (only the layouts), and its
    sample is not run under the graph-measuring hooks that torch.func refuses."""
    params = networks.init_conv_params(4, 1, 4, num_outputs=3, dtype=torch.float64)
    learner = maml.MAML(params, networks.conv_net, vmap_tasks=True, group_tasks=None, fast=True)
    assert not learner.inner.group_tunable and not learner.inner.tunable
    for switch in learner.execution_options(random_batch(num_tasks=4)).values():
        switch()
        assert learner.inner.vmap_tasks and not learner.inner.group_tasks
