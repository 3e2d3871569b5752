"""Checkpoints carry a checksum of their contents: changed bytes, truncation and zeros are
refused in one line, resume falls back to the newest intact checkpoint (and continues exactly),
and checkpoints written before checksums still load, saying so."""
import os

import pytest
import torch

from fewshot.engine import checkpoints, runner
from fewshot.errors import UserError
from helpers import run_with
from test_protonet import assert_one_line_error, run_cli, small_learner, synthetic_args, synthetic_sampler


def flip_bytes(path, start_fraction=0.5, count=64):
    """XOR count bytes of the file from start_fraction of its length: its size kept."""
    data = bytearray(open(path, 'rb').read())
    start = int(len(data) * start_fraction)
    for i in range(start, start + count):
        data[i] ^= 0xFF
    open(path, 'wb').write(bytes(data))


def zero_bytes(path, start_fraction, count):
    data = bytearray(open(path, 'rb').read())
    start = int(len(data) * start_fraction)
    data[start:start + count] = bytes(count)
    open(path, 'wb').write(bytes(data))


def truncate(path):
    os.truncate(path, os.path.getsize(path) * 2 // 3)


def zero_whole(path):
    open(path, 'wb').write(bytes(os.path.getsize(path)))


def big_checkpoint():
    return {'step': 3, 'learner': {'w': torch.randn(20000, generator=torch.Generator().manual_seed(0)),
                                   'h': torch.ones(7, dtype=torch.bfloat16)},
            'rng': torch.Generator().get_state(), 'args': {'lr': 0.1, 'sizes': [1, 2], 'name': None},
            'val_score': 0.5}


def test_digest_tells_contents_apart():
    one, other = big_checkpoint(), big_checkpoint()
    assert checkpoints.contents_digest(one) == checkpoints.contents_digest(other)
    other['learner']['w'][123] += 1e-6
    assert checkpoints.contents_digest(one) != checkpoints.contents_digest(other)
    for change in ({'val_score': 0.5000001}, {'step': 4}, {'args': {'lr': 0.1, 'sizes': [1, 2], 'name': ''}}):
        assert checkpoints.contents_digest({**one, **change}) != checkpoints.contents_digest(one), change
    # the same bytes under another dtype or shape are other contents
    assert checkpoints.contents_digest({'t': torch.zeros(4, dtype=torch.int32)}) != \
        checkpoints.contents_digest({'t': torch.zeros(4, dtype=torch.float32)})
    assert checkpoints.contents_digest({'t': torch.zeros(2, 2)}) != checkpoints.contents_digest({'t': torch.zeros(4)})


def test_round_trip_strips_the_checksum(tmp_path):
    path = str(tmp_path / 'state3.pt')
    checkpoints.write(big_checkpoint(), path)
    assert checkpoints.CHECKSUM in torch.load(path, weights_only=False)
    read = checkpoints.read(path)
    assert checkpoints.CHECKSUM not in read and torch.equal(read['learner']['w'], big_checkpoint()['learner']['w'])


@pytest.mark.parametrize('damage', [
    lambda p: flip_bytes(p, 0.5), lambda p: flip_bytes(p, 0.3, 8), lambda p: flip_bytes(p, 0.9, 16),
    lambda p: zero_bytes(p, 0.4, 4096), truncate, zero_whole])
def test_every_kind_of_damage_is_refused(tmp_path, damage):
    path = str(tmp_path / 'state3.pt')
    checkpoints.write(big_checkpoint(), path)
    damage(path)
    with pytest.raises(checkpoints.DamagedCheckpoint, match='state3.pt'):
        checkpoints.read(path)


def test_a_value_changed_in_a_readable_file_is_refused(tmp_path):
    path = str(tmp_path / 'state3.pt')
    checkpoints.write(big_checkpoint(), path)
    checkpoint = torch.load(path, weights_only=False)
    checkpoint['val_score'] = 0.99  # readable, its checksum kept: a lie
    torch.save(checkpoint, path)
    with pytest.raises(checkpoints.DamagedCheckpoint, match='do not match the checksum'):
        checkpoints.read(path)


def test_a_checkpoint_without_checksum_loads_with_a_note_once(tmp_path, capsys):
    path = str(tmp_path / 'state3.pt')
    torch.save(big_checkpoint(), path)  # as written before checksums
    for _ in range(2):
        assert checkpoints.read(path)['step'] == 3
    assert capsys.readouterr().out.count(f'{path} carries no checksum') == 1


def damage_checkpoint_of_run(log_dir, step):
    flip_bytes(checkpoints.path(log_dir, step), 0.6)
    with pytest.raises(checkpoints.DamagedCheckpoint):
        checkpoints.load(log_dir, step)


def test_resume_falls_back_to_the_newest_intact_checkpoint_and_continues_exactly(tmp_path, capsys):
    straight, damaged = str(tmp_path / 'straight'), str(tmp_path / 'damaged')
    run_with(synthetic_args(num_train_iterations=6, val_interval=2), straight, small_learner, synthetic_sampler)
    run_with(synthetic_args(num_train_iterations=4, val_interval=2), damaged, small_learner, synthetic_sampler)
    assert checkpoints.saved_steps(damaged) == [0, 3]
    damage_checkpoint_of_run(damaged, 3)
    capsys.readouterr()
    run_with(synthetic_args(num_train_iterations=6, val_interval=2), damaged, small_learner, synthetic_sampler)
    out = capsys.readouterr().out
    moved = checkpoints.path(damaged, 3) + runner.DAMAGED_SUFFIX
    assert f'not resuming from {checkpoints.path(damaged, 3)}: it is damaged' in out and moved in out
    assert f'resuming from {checkpoints.path(damaged, 0)}' in out
    assert os.path.exists(moved) and checkpoints.saved_steps(damaged) == [0, 5]  # kept, and never picked
    a, b = checkpoints.load(straight, 5)['learner']['network'], checkpoints.load(damaged, 5)['learner']['network']
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_no_intact_checkpoint_is_refused_in_one_line(tmp_path):
    log_dir = str(tmp_path)
    run_with(synthetic_args(num_train_iterations=3), log_dir, small_learner, synthetic_sampler)
    for step in checkpoints.saved_steps(log_dir):
        damage_checkpoint_of_run(log_dir, step)
    with pytest.raises(UserError, match='no intact checkpoint in .*state2.pt, state0.pt damaged or unreadable\\)'):
        runner.newest_intact(log_dir, checkpoints.saved_steps(log_dir), main=False)
    assert checkpoints.saved_steps(log_dir) == [0, 2]  # only rank 0 moves files
    with pytest.raises(UserError, match='no intact checkpoint .* moved aside'):
        run_with(synthetic_args(num_train_iterations=6), log_dir, small_learner, synthetic_sampler)
    assert checkpoints.saved_steps(log_dir) == [] and len(os.listdir(log_dir)) >= 2


def test_resuming_or_testing_a_damaged_step_is_refused(tmp_path):
    log_dir = str(tmp_path)
    run_with(synthetic_args(num_train_iterations=3), log_dir, small_learner, synthetic_sampler)
    damage_checkpoint_of_run(log_dir, 2)
    with pytest.raises(checkpoints.DamagedCheckpoint, match='state2.pt is damaged'):
        run_with(synthetic_args(num_train_iterations=6, checkpoint_step=2), log_dir, small_learner, synthetic_sampler)
    with pytest.raises(checkpoints.DamagedCheckpoint, match='state2.pt is damaged'):
        run_with(synthetic_args(test=True, checkpoint_step=2), log_dir, small_learner, synthetic_sampler)


@pytest.mark.slow
def test_the_program_refuses_a_damaged_checkpoint_in_one_line(tmp_path):
    log_dir = str(tmp_path)
    run_with(synthetic_args(num_train_iterations=1), log_dir, small_learner, synthetic_sampler)
    flip_bytes(checkpoints.path(log_dir, 0), 0.6)
    assert_one_line_error(run_cli('--test', '--log_dir', log_dir, '--checkpoint_step', '0'),
                          f'checkpoint {checkpoints.path(log_dir, 0)} is damaged', '--checkpoint_step')
