"""--precision bf16: the loop computes under bfloat16 autocast, losses stay close to fp32,
and a device without native bfloat16 is refused in one line."""
import pytest
import torch

from fewshot.algorithms import protonet
import run_metabolism

from test_metabolism import write_tables
from fewshot import networks
from fewshot import tasks
from fewshot import runtime
from fewshot.errors import UserError


def tiny_run(folder, log_dir, *flags):
    run_metabolism.main(['--datadir', folder, '--log_dir', log_dir, '--num_train_iterations', '2',
                         '--num_val_tasks', '4', '--num_support', '2', '--num_query', '3', *flags])


def test_bf16_runs_the_loop_under_autocast_and_fp32_does_not(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, 'cpu_has_bf16', lambda: True)  # emulated where not native: slow, same numbers
    folder = write_tables(tmp_path / 'data')
    seen, real_loss, real_evaluate = {}, protonet.ProtoNet.loss, protonet.ProtoNet.evaluate

    def loss(self, batch, step):
        objective, metrics = real_loss(self, batch, step)
        seen.setdefault('loss', set()).add((torch.is_autocast_enabled('cpu'), objective.dtype))
        return objective, metrics

    def evaluate(self, batch):
        seen.setdefault('evaluate', set()).add(torch.is_autocast_enabled('cpu'))
        return real_evaluate(self, batch)
    monkeypatch.setattr(protonet.ProtoNet, 'loss', loss)  # the course's ProtoNet's
    monkeypatch.setattr(protonet.ProtoNet, 'evaluate', evaluate)
    for precision, autocast in (('bf16', True), ('fp32', False)):
        seen.clear()
        tiny_run(folder, str(tmp_path / precision), '--precision', precision)
        assert seen == {'loss': {(autocast, torch.float32)}, 'evaluate': {autocast}}
    assert not torch.is_autocast_enabled('cpu')  # the context ends with the run


def test_bf16_protonet_loss_and_gradient_are_close_to_fp32():
    torch.manual_seed(0)
    encoder = networks.FunctionalNet(networks.conv_features, networks.init_conv_params(4, 1, 16))
    learner = protonet.ProtoNet(encoder, tasks_per_call=1)
    batch = tasks.task_batch_from_draws(torch.rand(2, 5, 6, 1, 28, 28), 1)
    results = []
    for enabled in (False, True):
        encoder.zero_grad()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=enabled):
            loss, _ = learner.loss(batch, 0)
        loss.backward()
        results.append((loss.item(), torch.cat([p.grad.flatten() for p in encoder.parameters()])))
    (loss32, grad32), (loss16, grad16) = results
    assert loss16 == pytest.approx(loss32, rel=0.03) and loss16 != loss32  # bfloat16 did compute
    assert torch.nn.functional.cosine_similarity(grad32, grad16, 0) > 0.97


def test_bf16_without_native_support_is_one_line_naming_the_flag(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, 'cpu_has_bf16', lambda: False)
    with pytest.raises(UserError, match='--precision bf16: the cpu device here has no native bfloat16'):
        tiny_run(write_tables(tmp_path / 'data'), str(tmp_path / 'log'), '--precision', 'bf16')


def test_prototype_distances_are_float32_under_bf16_autocast():
    # three shots: their bf16 mean, and bf16 matrix products, would round
    support, query = torch.randn(2, 15, 64).bfloat16(), torch.randn(2, 6, 64).bfloat16() + 30
    labels = torch.arange(5).repeat_interleave(3).expand(2, -1)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        logits = protonet.prototype_logits(support, labels, query, 5)
    assert logits.dtype == torch.float32
    assert torch.equal(logits, protonet.prototype_logits(support.float(), labels, query.float(), 5))


def test_the_runs_autocast_sees_every_optimizer_step(monkeypatch):
    monkeypatch.setattr(runtime, 'cpu_has_bf16', lambda: True)
    weight = torch.ones(3, 3, requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=0.5)
    x = torch.ones(2, 3)
    with runtime.autocast(torch.device('cpu'), 'bf16'):  # one context around the whole run, as training.run
        before = torch.nn.functional.linear(x, weight)
        before.sum().backward()
        optimizer.step()
        after = torch.nn.functional.linear(x, weight)
    assert before.dtype == torch.bfloat16 and (after == 0).all()  # the stepped weights (1 - 0.5 * 2), not the first


@pytest.mark.parametrize('native', [True, False])
def test_auto_precision_is_bf16_only_where_native(native, monkeypatch):
    monkeypatch.setattr(runtime, 'cpu_has_bf16', lambda: native)
    with runtime.autocast(torch.device('cpu'), 'auto'):
        assert torch.is_autocast_enabled('cpu') == native
