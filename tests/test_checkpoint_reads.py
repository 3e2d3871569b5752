"""Checkpoints: the best step and a run's flags are read without loading weights; a
continued run loads its checkpoint's weights once."""
import torch

import maml
from fewshot.engine import checkpoints


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
