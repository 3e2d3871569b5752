"""Seeded runs end with the weights recorded in tests/reference_weights.json
(written by tests/reference_runs.py on an earlier version of the code).

Where the arithmetic is the same, the weights are the same bit for bit on the
platform they were recorded on (torch version, CPU kernels, thread count).
Reptile's meta-update is now an SGD step on the gradient theta - mean(phi),
a different operation order than adding epsilon / B times the summed moves,
so it agrees to round-off. Conv biases feed batch norm, which subtracts them
again: their effect on every output is nil and their meta-gradient is
round-off, so they are compared by scale only (both at round-off level).
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


def assert_close(name, got, expected):
    if is_conv_bias(name):
        assert got['sum_sq'] < 1e-8 and expected['sum_sq'] < 1e-8, name
        return
    assert got['shape'] == expected['shape'], name
    assert got['sum_sq'] == pytest.approx(expected['sum_sq'], rel=1e-5), name
    assert got['sum'] == pytest.approx(expected['sum'], rel=1e-4, abs=1e-5), name
    assert got['head'] == pytest.approx(expected['head'], rel=1e-4, abs=1e-6), name


@pytest.mark.parametrize('name', list(reference_runs.RUNS))
def test_seeded_run_ends_with_the_recorded_weights(name):
    conftest.real_data('omniglot')
    conftest.real_data('metabolism')
    expected = RECORDED['runs'][name]
    with tempfile.TemporaryDirectory() as log_dir:
        got = reference_runs.run(name, conftest.DATA_ROOT, log_dir)
    assert got.keys() == expected.keys()
    bit_for_bit = reference_runs.platform() == RECORDED['platform'] and name not in ROUND_OFF_ONLY
    for tensor in expected:
        if bit_for_bit:
            assert got[tensor]['sha256'] == expected[tensor]['sha256'], tensor
        else:
            assert_close(tensor, got[tensor], expected[tensor])
