"""Checkpoints: the best step and a run's flags are read without loading weights; a
continued run loads its checkpoint's weights once; checkpoints in the older layout resume and test."""
import os

import pytest
import torch

import maml
import run_metabolism
from fewshot import cli, flags, registry
from fewshot.engine import checkpoints
from fewshot.errors import UserError
from helpers import run_with
from test_protonet import synthetic_sampler


# ---------------------------------------------------------------- checkpoints of the older layout

def to_older_layout(log_dir, step):
    """Rewrite state{step}.pt as written before the loop owned the optimizer: the optimizer's
    state inside 'learner', no 'optimizer_kind', and maml.py's rate under 'outer_lr'."""
    path = checkpoints.path(log_dir, step)
    checkpoint = torch.load(path, weights_only=False)
    del checkpoint[checkpoints.CHECKSUM]  # written before checksums
    optimizer, kind = checkpoint.pop('optimizer'), checkpoint.pop('optimizer_kind')
    if kind == 'sgd':  # Reptile once held an Adam it never stepped
        optimizer = torch.optim.Adam([torch.zeros(1)], lr=checkpoint['args']['learning_rate']).state_dict()
    checkpoint['learner']['optimizer'] = optimizer
    checkpoint['args']['outer_lr'] = checkpoint['args'].pop('learning_rate')
    torch.save(checkpoint, path)


def test_scores_and_flags_are_read_without_weights(monkeypatch, tmp_path):
    maml.main(['--dataset', 'sinusoid', '--num_train_iterations', '3', '--num_val_tasks', '2', '--val_interval', '1',
               '--log_dir', str(tmp_path)])
    loads, load = [], torch.load
    monkeypatch.setattr(torch, 'load', lambda *args, **kwargs: loads.append(kwargs.get('mmap')) or load(*args, **kwargs))
    saved = checkpoints.saved_steps(str(tmp_path))
    assert checkpoints.best_step(str(tmp_path)) in saved
    assert checkpoints.flags_of(str(tmp_path))['dataset'] == 'sinusoid'
    assert loads == [True] * (len(saved) + 1)  # each checkpoint's score and one set of flags, memory-mapped
    loads.clear()
    maml.main(['--dataset', 'sinusoid', '--num_train_iterations', '4', '--num_val_tasks', '2', '--val_interval', '1',
               '--log_dir', str(tmp_path)])  # continues from step 2
    assert loads.count(False) + loads.count(None) == 1, loads  # the weights of the step it continues from, once


@pytest.mark.parametrize('flags', [['--learn_inner_lrs'], ['--algorithm', 'reptile', '--num_inner_steps', '2']])
def test_checkpoint_in_the_older_layout_resumes_exactly_and_tests(tmp_path, capsys, flags):
    common = ['--num_way', '3', '--num_support', '1', '--num_query', '2', '--batch_size', '2', '--num_val_tasks', '2',
              '--num_hidden_channels', '4', *flags]
    args = lambda *more: cli.parse(maml.PROGRAM, [*common, *more])  # noqa: E731
    build = lambda a, device: registry.algorithm(a.algorithm).build_learner(a, registry.dataset('omniglot'), device)  # noqa: E731
    straight, older = str(tmp_path / 'straight'), str(tmp_path / 'older')
    for log_dir in (straight, older):  # checkpoints at steps 0 and 4
        run_with(args('--num_train_iterations', '5'), log_dir, build, synthetic_sampler)
    os.remove(checkpoints.path(older, 4))  # as if the run had stopped after step 0
    to_older_layout(older, 0)
    assert 'optimizer' in torch.load(checkpoints.path(older, 0), weights_only=False)['learner']
    with pytest.raises(UserError, match='--learning_rate [0-9.]+ \\(now 0.5\\)'):  # the renamed flag is still checked
        run_with(args('--num_train_iterations', '5', '--checkpoint_step', '0', '--outer_lr', '0.5'), older, build,
                     synthetic_sampler)
    run_with(args('--num_train_iterations', '5', '--checkpoint_step', '0'), older, build, synthetic_sampler)
    a, b = checkpoints.load(straight, 4)['learner'], checkpoints.load(older, 4)['learner']
    for group in ('meta_parameters', 'inner_lrs'):
        assert all(torch.equal(a[group][k], b[group][k]) for k in a[group]), group
    to_older_layout(older, 4)
    run_with(args('--test', '--checkpoint_step', '4', '--num_test_tasks', '4'), older, build, synthetic_sampler)
    out = capsys.readouterr().out
    assert 'Accuracy over 4 test tasks' in out and f'{checkpoints.path(older, 4)} carries no checksum' in out


def test_namespace_of_an_older_checkpoint_is_translated():
    checkpoint = {'learner': {'network': {}, 'optimizer': {'state': {}}},
                  'args': {'datadir': 'D', 'learning_rate': 0.1}}
    translated = checkpoints.translate(checkpoint)
    assert translated['optimizer'] == {'state': {}} and translated['optimizer_kind'] == 'adam'
    assert translated['args'] == {'datadir': 'D', 'learning_rate': 0.1, 'algorithm': 'protonet',
                                  'dataset': 'metabolism'}  # run_metabolism.py's ProtoNet
    assert translated['metric_kind'] == 'accuracy'
    command = cli.parse(run_metabolism.PROGRAM, [])
    assert {k: v for k, v in flags.recorded(command, translated).items() if k != 'algorithm'} == {
        'data_dir': 'D', 'learning_rate': 0.1, 'dataset': 'metabolism', 'features': 'morgan',
        'validation_protocol': 'halves', 'dropout': 0.0, 'label_order': 'random',  # as trained, whatever today's
        'train_num_way': None, 'train_num_query': None, 'val_interval': 50,  # defaults; newer flags as before them
        'target_tasks': 0, 'metric': 'euclidean', 'running_statistics': False, 'init_from': None}
    older_maml = checkpoints.translate({'learner': {'meta_parameters': {}, 'optimizer': {}},
                                        'args': {'outer_lr': 0.2, 'dataset': 'sinusoid'}, 'metric_kind': 'loss'})
    assert older_maml['args'] == {'outer_lr': 0.2, 'dataset': 'sinusoid', 'algorithm': 'maml'}
    assert flags.recorded(cli.parse(maml.PROGRAM, ['--dataset', 'sinusoid']), older_maml)['learning_rate'] == 0.2
    assert older_maml['metric_kind'] == 'loss'
