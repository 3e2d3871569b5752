"""Seeded runs end with the weights recorded in reference_weights.json beside this file
(written by reference_runs.py on an earlier version of the code).

Where the arithmetic is the same, the weights are the same bit for bit on the
platforms they were recorded on (torch version, CPU model and kernels, thread
count: the summary's, or one added later with only its sha256s). Elsewhere
they agree within what round-off can become in 4 Adam steps: Adam's first
steps move a weight by about the learning rate times the sign of its
gradient, so a gradient component near zero whose sign another CPU's kernels
flip moves that weight by up to 2 x lr per step (recorded on an Intel Xeon
and an AMD EPYC: the AMD runs differ from the Intel record by up to 5% in a
batch-norm bias's sum of squares, within this bound).
Reptile's meta-update is now an SGD step on the gradient theta - mean(phi),
a different operation order than adding epsilon / B times the summed moves,
so it agrees to round-off. Conv biases feed batch norm, which subtracts them
again: their effect on every output is nil and their meta-gradient is
round-off, so they are compared by scale only (Adam makes a step of about the
learning rate from a round-off gradient, and a CPU may give exact zeros where
another gives round-off).
"""
import os
import tempfile

import pytest

import conftest
import reference_runs

RECORDED = reference_runs.json.load(open(os.path.join(os.path.dirname(__file__), 'reference_weights.json')))
ROUND_OFF_ONLY = {'reptile'}


def is_conv_bias(name):
    return name.startswith('conv') and name.endswith('_bias')


ADAM_DRIFT = 2 * 1e-3 * 4  # 2 x the largest learning rate x the 4 steps of the runs


def assert_close(name, got, expected):
    """Another platform's weights against the recorded summary, within ADAM_DRIFT per weight."""
    if is_conv_bias(name):  # round-off gradients, which Adam may turn into steps of the learning rate
        bound = got['shape'][0] * ADAM_DRIFT ** 2
        assert got['sum_sq'] < bound and expected['sum_sq'] < bound, name
        return
    assert got['shape'] == expected['shape'], name
    assert got['head'] == pytest.approx(expected['head'], abs=ADAM_DRIFT), name
    assert got['sum_sq'] == pytest.approx(expected['sum_sq'], rel=0.1), name


@pytest.mark.parametrize('name', list(reference_runs.RUNS))
def test_seeded_run_ends_with_the_recorded_weights(name):
    conftest.real_data('omniglot')
    conftest.real_data('metabolism')
    expected = RECORDED['runs'][name]
    with tempfile.TemporaryDirectory() as log_dir:
        got = reference_runs.run(name, conftest.DATA_ROOT, log_dir)
    assert got.keys() == expected.keys()
    hashes = {k: v['sha256'] for k, v in expected.items()} if reference_runs.platform() == RECORDED['platform'] \
        else next((p['sha256'][name] for p in RECORDED.get('other_platforms', [])
                   if p['platform'] == reference_runs.platform()), None)
    for tensor in expected:
        if hashes is not None and name not in ROUND_OFF_ONLY:
            assert got[tensor]['sha256'] == hashes[tensor], tensor
        else:
            assert_close(tensor, got[tensor], expected[tensor])
