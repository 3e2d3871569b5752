"""Meta-training under torchrun (2 CPU processes, gloo) computes what one process
computes: the same weights, logged metrics and test result up to float32
round-off, for ProtoNet, second-order MAML with learned inner learning rates
and 2 inner steps, and Reptile, with B = 5 tasks split 3 + 2; a 2-process
checkpoint resumes in 1 process; only rank 0 writes.

Tolerances: the processes sum their shares' gradients in another order than
one process does, so float32 weights differ by round-off; after 4 Adam steps
at lr 1e-3 that is far below 1e-5. Conv biases feed batch norm, so their true
gradient is zero and the computed one is round-off that Adam turns into
+-lr steps: they are compared by scale only (see test_reference.py).
"""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import conftest
import torch

from test_reference import is_conv_bias
from fewshot.engine import checkpoints
from fewshot.engine import distributed
from fewshot import tasks

ROOT = conftest.ROOT
TINY = ['--num_train_iterations', '4', '--batch_size', '5', '--num_support', '2', '--num_query', '3',
        '--num_val_tasks', '5', '--num_hidden_channels', '8', '--seed', '2']
# one way of computing a step for both runs (one process would time the ways and might pick
# another). Contiguous images: there the two runs agree to 1e-7 after 4 steps; with
# channels-last images they agree to about 1e-4 (measured; each run is bit-for-bit repeatable,
# and one step's gradients agree to round-off, but this tiny 8-channel net's first Adam steps
# amplify the difference)
ONE_WAY = ['--channels_last', 'no']
RUNS = {
    'protonet': ('protonet.py', [*ONE_WAY, '--encoder_calls', 'per_task']),
    'maml': ('maml.py', [*ONE_WAY, '--vmap_tasks', 'no', '--num_inner_steps', '2', '--learn_inner_lrs',
                         '--inner_lr', '0.1']),
    'reptile': ('maml.py', [*ONE_WAY, '--vmap_tasks', 'no', '--algorithm', 'reptile', '--num_inner_steps', '2',
                            '--inner_lr', '0.1']),
}


def launch(script, flags, processes):
    """Run a script in 1 process, or under torchrun in several; returns its stdout."""
    if processes == 1:
        command = [sys.executable, os.path.join(ROOT, script)]
    else:
        command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node',
                   str(processes), os.path.join(ROOT, script)]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run([*command, *flags], capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def trained(log_dir, step):
    state = checkpoints.load(log_dir, step)['learner']
    return state['network'] if 'network' in state else {**state['meta_parameters'],
                                                        **{f'lr/{k}': v for k, v in state['inner_lrs'].items()}}


def assert_same_weights(a, b, steps=4, lr=1e-3):
    """Equal to round-off, but for the few entries whose gradient is itself round-off (conv
    biases before batch norm, channels that ReLU switched off), which Adam moves by up to
    about lr per step whatever the rounding."""
    assert a.keys() == b.keys()
    differing = total = 0
    for name in a:
        difference = (a[name] - b[name]).abs()
        assert difference.max() <= 1.5 * steps * lr, name
        if not is_conv_bias(name.replace('params.', '')):
            differing += int((difference > 1e-5 + 1e-4 * b[name].abs()).sum())
            total += difference.numel()
    assert differing <= 0.01 * total, (differing, total)


def scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(log_dir)
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()['scalars']}


def test_shares_cover_the_tasks_in_order():
    for size in (1, 2, 3, 5):
        for num_tasks in (size, 5, 16, 17):
            shares = [distributed.Processes(rank, size).share(num_tasks) for rank in range(size)]
            covered = [i for s in shares for i in range(num_tasks)[s]]
            assert covered == list(range(num_tasks))
            assert max(s.stop - s.start for s in shares) - min(s.stop - s.start for s in shares) <= 1


@pytest.mark.slow
def test_gradients_summed_over_two_processes_equal_one_process_in_float64(tmp_path):
    """The loop's split, weighting and all-reduce give one process's meta-gradient and metrics."""
    import distributed_gradients
    out = str(tmp_path / 'two.pt')
    launch(os.path.join('tests', 'engine', 'distributed_gradients.py'), [out], 2)
    two, one = torch.load(out, weights_only=False), distributed_gradients.gradients(distributed.ONE)
    assert two.pop('drift_is_caught')  # and parameters that drift apart are caught
    assert two.pop('buffers_agree')  # per-step batch-norm running statistics averaged
    for name in one:
        assert one[name][0].keys() == two[name][0].keys()
        for metric, value in one[name][0].items():  # accuracies are float32 means: 1e-7 apart
            assert two[name][0][metric] == pytest.approx(value, rel=1e-6), (name, metric)
        for a, b in zip(one[name][1], two[name][1]):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-13), name


def test_one_process_is_a_no_op():
    one = distributed.ONE
    tensor = torch.ones(3, requires_grad=True)
    tensor.grad = torch.full((3,), 2.0)
    one.sum_gradients([tensor])
    one.average([tensor.detach()])
    assert torch.equal(tensor.grad, torch.full((3,), 2.0)) and one.sum(1.5) == 1.5
    assert np.array_equal(one.gather(np.arange(3)), np.arange(3)) and one.is_main
    batch = tasks.TaskBatch(*(torch.arange(5).view(5, 1) for _ in range(4)))
    assert batch.select(one.share(5)).labels_query.tolist() == [[0], [1], [2], [3], [4]]


@pytest.mark.parametrize('name', list(RUNS))
@pytest.mark.slow
def test_two_processes_compute_what_one_computes(omniglot_dir, tmp_path, name):
    script, flags = RUNS[name]
    logs = {p: str(tmp_path / f'p{p}') for p in (1, 2)}
    outputs = {p: launch(script, [*flags, *TINY, '--data_dir', omniglot_dir, '--log_dir', logs[p]], p)
               for p in (1, 2)}
    assert_same_weights(trained(logs[1], 3), trained(logs[2], 3))
    one, two = scalars(logs[1]), scalars(logs[2])
    assert one.keys() == two.keys()
    for tag in one:
        assert [s for s, _ in one[tag]] == [s for s, _ in two[tag]], tag
        assert np.allclose([v for _, v in one[tag]], [v for _, v in two[tag]], rtol=1e-4, atol=1e-5), tag
    assert outputs[2].count('logging to') == 1 and '(2 processes)' in outputs[2]  # rank 0 alone prints
    written = sorted(os.listdir(logs[2]))
    assert len(written) == 3 and written[1:] == ['state0.pt', 'state3.pt'] and written[0].startswith('events')
    tests = {p: launch(script, ['--test', '--log_dir', logs[p], '--data_dir', omniglot_dir, '--num_test_tasks', '7',
                                '--num_support', '2', '--num_query', '3', '--checkpoint_step', '3'], p)
             for p in (1, 2)}
    lines = {p: [line for line in tests[p].splitlines() if 'over 7 test tasks' in line] for p in (1, 2)}
    assert len(lines[2]) == 1 and lines[1] == lines[2]  # the same mean and CI, printed once


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_in_one_process(omniglot_dir, tmp_path):
    script, flags = RUNS['maml']
    two, resumed = str(tmp_path / 'two'), str(tmp_path / 'resumed')
    launch(script, [*flags, *TINY, '--data_dir', omniglot_dir, '--log_dir', two], 2)
    os.makedirs(resumed)
    shutil.copy(checkpoints.path(two, 0), resumed)
    launch(script, [*flags, *TINY, '--data_dir', omniglot_dir, '--log_dir', resumed, '--checkpoint_step', '0'], 1)
    assert_same_weights(trained(two, 3), trained(resumed, 3))
