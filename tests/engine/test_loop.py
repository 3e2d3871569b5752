"""The training loop: the first training scalars are on disk before the first validation pass;
the learning rate halves on schedule; dropout only inside training; weight decay reaches the optimizer."""
import argparse

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import maml
import protonet
from fewshot import networks, tasks
from fewshot.engine import evaluation, loop


def test_the_first_training_step_is_logged_before_validating(monkeypatch, tmp_path):
    seen, validate = [], evaluation.validate

    def looking(*args, **kwargs):
        events = EventAccumulator(str(tmp_path))
        events.Reload()
        seen.append([event.step for event in events.Scalars('loss/train')] if 'loss/train' in events.Tags()['scalars']
                    else [])
        return validate(*args, **kwargs)
    monkeypatch.setattr(evaluation, 'validate', looking)
    maml.main(['--dataset', 'sinusoid', '--num_train_iterations', '2', '--num_val_tasks', '2', '--val_interval', '1',
               '--log_dir', str(tmp_path)])
    assert seen[0] == [0]  # step 0's training loss, then its validation


def test_lr_halving_steps_halve_the_loops_learning_rate(omniglot_dir, tmp_path, monkeypatch):
    rates, real = [], loop.meta_update
    monkeypatch.setattr(loop, 'meta_update', lambda learner, optimizer, batch, step, lr, *rest, **options:
                        rates.append((lr, step)) or real(learner, optimizer, batch, step, lr, *rest, **options))
    protonet.main(['--data_dir', omniglot_dir, '--log_dir', str(tmp_path), '--num_hidden_channels', '4',
                   '--batch_size', '1', '--num_val_tasks', '1', '--num_query', '1', '--num_train_iterations', '5',
                   '--lr_halving_steps', '2', '--learning_rate', '0.004'])
    assert rates == [(0.004, 0), (0.004, 1), (0.002, 2), (0.002, 3), (0.001, 4)]


def test_dropout_only_inside_training_and_the_loop_trains_inside_it():
    params = networks.init_mlp_params((6, 400))  # one layer: its output is what dropout sees
    x = torch.randn(40, 6)
    plain = networks.mlp_features(params, x)
    assert torch.equal(networks.mlp_features(params, x, dropout=0.5), plain)  # evaluation: no dropout
    with networks.training():
        dropped = networks.mlp_features(params, x, dropout=0.5)
        assert torch.equal(networks.mlp_features(params, x), plain)  # dropout 0: unchanged
    kept = dropped != 0
    assert 0.4 < 1 - kept.float().mean().item() < 0.6
    assert torch.allclose(dropped[kept], 2 * plain[kept])  # the rest scaled by 1 / (1 - p)
    assert not networks.is_training()

    class ModeRecorder:
        tasks_per_backward = 0

        def __init__(self):
            self.weight, self.modes = torch.ones(1, requires_grad=True), []

        def loss(self, batch, step):
            self.modes.append(networks.is_training())
            return self.weight.sum(), {'query': torch.zeros(len(batch))}
    learner = ModeRecorder()
    batch = tasks.TaskBatch(torch.zeros(4, 2, 1), torch.zeros(4, 2), torch.zeros(4, 2, 1), torch.zeros(4, 2))
    loop.backward_in_groups(learner, batch, 0, 2, 4)
    assert learner.modes == [True, True]


def test_weight_decay_reaches_the_optimizer():
    learner = argparse.Namespace(optimizer='sgd', parameters=lambda: [weight])
    weight = torch.tensor([2.0, -4.0], requires_grad=True)
    optimizer = loop.build_optimizer(learner, 0.1, weight_decay=0.5)
    weight.grad = torch.zeros(2)
    optimizer.step()
    assert torch.allclose(weight.detach(), torch.tensor([2.0, -4.0]) * (1 - 0.1 * 0.5))  # L2: grad += 0.5 w
