"""tuning.choose: the fastest way is timed once, cached per machine and run settings, and
leaves the run's state, tasks and numbers as they were."""
import pytest
import torch

import protonet
from fewshot import cli, execution, networks, tasks
from fewshot.engine import tuning


def tiny_protonet(tasks_per_call=None, dtype=torch.float32, channels_last=False):
    torch.manual_seed(0)
    params = networks.init_conv_params(4, 1, 4, dtype=dtype)
    return protonet.ProtoNet(networks.FunctionalNet(networks.conv_features, params), tasks_per_call=tasks_per_call,
                             channels_last=channels_last, fast=True)


def batch(seed=0, dtype=torch.float32):
    examples = torch.rand(6, 20, 1, 28, 28, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return tasks.TaskSampler(examples, 3, 2, 2, seed=seed).sample(4)


CPU = torch.device('cpu')


def key(*flags):
    """The tuning key of protonet.py with these flags."""
    return tuning.run_key(cli.parse(protonet.PROGRAM, ['--num_way', '3', '--num_support', '2', *flags]), CPU)


KEY = key('--log_dir', 'a', '--seed', '0')


def test_the_faster_way_is_chosen_cached_and_reused(tmp_path, monkeypatch, capsys):
    path = str(tmp_path / 'tuning.json')
    speeds = {1: 0.2, execution.ALL_TASKS: 0.1}  # a fake clock: batched calls "faster"
    timed = []

    def fake_seconds(learner, task_batch, repeats=2):
        timed.append(learner.calls.tasks_per_call)
        return speeds[learner.calls.tasks_per_call]
    monkeypatch.setattr(tuning, 'seconds_per_step', fake_seconds)
    learner = tiny_protonet()
    assert tuning.choose(learner, batch, KEY, path) == 'one batched encoder call'
    assert learner.calls.tasks_per_call == execution.ALL_TASKS and sorted(timed) == sorted(speeds)
    out = capsys.readouterr().out  # what it does is said before it is done
    assert out.index('timing 2 ways to compute a step on this machine (once') < out.index(
        'fastest way here: one batched encoder call (100 ms a step, 2.00x the slowest)')
    speeds.update({1: 0.05})  # cached: not timed again, even if the clock now says otherwise
    other = tiny_protonet()
    assert tuning.choose(other, batch, key('--seed', '3', '--log_dir', 'b'), path) == 'one batched encoder call'
    assert len(timed) == 2 and capsys.readouterr().out == ''
    changed = key('--num_way', '5')  # another task shape: timed anew
    assert tuning.choose(tiny_protonet(), batch, changed, path) == 'per-task encoder calls'
    assert len(timed) == 4


def test_a_forced_way_is_not_timed(tmp_path):
    learner = tiny_protonet(tasks_per_call=1)
    assert learner.execution_options() == {}
    assert tuning.choose(learner, pytest.fail, KEY, str(tmp_path / 't.json')) is None


def test_timing_leaves_parameters_gradients_and_rng_as_found(tmp_path):
    learner = tiny_protonet()
    before = [p.detach().clone() for p in learner.parameters()]
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    tuning.choose(learner, batch, KEY, str(tmp_path / 't.json'))
    assert torch.equal(torch.rand(3), expected)
    assert all(torch.equal(a, b) and b.grad is None for a, b in zip(before, learner.parameters()))


def test_one_task_a_step_times_only_the_layouts():
    """Per-task and batched encoder calls on one task are the same call; MAML has nothing to group."""
    import maml  # the course's learner, whose graded methods the faster ways compute
    one, two = batch().select(slice(0, 1)), batch().select(slice(0, 2))
    protonet_learner = tiny_protonet(channels_last=None)
    assert list(protonet_learner.execution_options(one)) == ['channels-last images', 'contiguous images']
    assert len(protonet_learner.execution_options(two)) == 4
    meta = maml.MAML(networks.init_conv_params(4, 1, 4, num_outputs=3), networks.conv_net, vmap_tasks=False,
                     channels_last=False, group_tasks=None, fast=True)
    assert meta.execution_options(one) == {} and len(meta.execution_options(two)) == 2


def test_every_way_gives_the_same_loss_and_gradient():
    """In float64 (in float32 the conv biases' gradients, zero but for round-off under batch norm, differ)."""
    task_batch = batch(dtype=torch.float64)
    results = []
    ways = tiny_protonet(channels_last=None).execution_options()
    assert len(ways) == 4  # encoder calls x image layouts
    for use in ways:
        learner = tiny_protonet(dtype=torch.float64, channels_last=None)
        learner.execution_options()[use]()
        objective, _ = learner.loss(task_batch, 0)
        objective.backward()
        results.append((objective.detach(), [p.grad for p in learner.parameters()]))
    (loss, grads), others = results[0], results[1:]
    for other_loss, other_grads in others:
        torch.testing.assert_close(other_loss, loss)
        for g, h in zip(grads, other_grads):
            torch.testing.assert_close(h, g, rtol=1e-9, atol=1e-12)


def test_independent_choices_combine_and_a_forced_one_drops_out():
    picked = []
    calls = {'per-task': lambda: picked.append('per-task'), 'batched': lambda: picked.append('batched')}
    layouts = {'nchw': lambda: picked.append('nchw'), 'nhwc': lambda: picked.append('nhwc')}
    options = execution.combine(calls, layouts)
    assert list(options) == ['per-task, nchw', 'per-task, nhwc', 'batched, nchw', 'batched, nhwc']
    options['batched, nhwc']()
    assert picked == ['batched', 'nhwc']
    assert list(execution.combine({}, layouts)) == ['nchw', 'nhwc']
    assert execution.combine({}, {}) == {} and execution.combine({'only': lambda: None}) == {}


class CountingLearner:
    """A learner double whose forward pass updates a buffer in place (like running statistics)."""
    tasks_per_backward = 0

    def __init__(self):
        self.weight, self.calls, self.way = torch.ones(1, requires_grad=True), torch.zeros(1), 'a'

    def execution_options(self, sample=None):
        return {'a': lambda: setattr(self, 'way', 'a'), 'b': lambda: setattr(self, 'way', 'b')}

    def parameters(self):
        return [self.weight]

    def loss(self, task_batch, step):
        self.calls += 1
        return self.weight.sum() * len(task_batch), {'query': torch.zeros(len(task_batch))}

    def state(self):
        return {'calls': self.calls}

    def load_state(self, state):
        self.calls.copy_(state['calls'])


def test_timing_restores_state_the_forward_passes_changed(tmp_path):
    learner = CountingLearner()
    tuning.choose(learner, batch, KEY, str(tmp_path / 't.json'))
    assert learner.calls.item() == 0 and learner.weight.grad is None


def test_maml_on_a_cpu_times_no_vmap_trial():
    """vmap's trial would hold several tasks' graphs at once, more than the per-task loop's
    training ever holds: on a CPU the loop is taken untimed, and only the image layouts are timed."""
    import maml  # the course's learner, whose graded methods the faster ways compute
    params = networks.init_conv_params(1, 1, 2, num_outputs=3)
    meta = maml.MAML(params, networks.conv_net, num_inner_steps=5, vmap_tasks=None, channels_last=None, fast=True)
    assert not meta.inner.vmap_tasks and list(meta.execution_options()) == ['channels-last images',
                                                                              'contiguous images']
    forced = maml.MAML(params, networks.conv_net, vmap_tasks=True, channels_last=False)
    assert forced.inner.vmap_tasks
