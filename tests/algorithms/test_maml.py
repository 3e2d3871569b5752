"""MAML against finite differences, an independent nn.Module oracle, and
between its per-task loop and its vmap path; first-order, learned inner
learning rates, evaluation without graphs, exact resume, a real short run."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import maml

from fewshot.engine import checkpoints
from fewshot.engine import loop
from fewshot import cli
from fewshot import networks
from fewshot import tasks
from fewshot.algorithms import reptile
from fewshot.algorithms.inner_loop import Variants
from helpers import run_with
from fewshot.errors import UserError
from fewshot import registry





def tiny_maml(num_inner_steps=1, learn_inner_lrs=False, first_order=None, vmap_tasks=False, inner_lr=0.3,
              dtype=torch.float64, seed=0, learner_class=maml.MAML, **variants):
    torch.manual_seed(seed)
    params = networks.init_conv_params(4, 1, 4, num_outputs=3, dtype=dtype)
    options = dict(params=params, forward=networks.conv_net, num_inner_steps=num_inner_steps, inner_lr=inner_lr,
                   learn_inner_lrs=learn_inner_lrs, vmap_tasks=vmap_tasks, variants=Variants(**variants))
    learner = learner_class(**options) if first_order is None else learner_class(first_order=first_order, **options)
    with torch.no_grad():  # non-trivial batch-norm affine parameters
        for name, value in learner.inner.meta_parameters.items():
            if name.startswith('bn'):
                value.uniform_(0.5, 1.5) if name.endswith('weight') else value.uniform_(-0.3, 0.3)
    return learner


def random_batch(num_tasks=2, support=2, query=3, dtype=torch.float64, seed=1):
    generator = torch.Generator().manual_seed(seed)
    examples = torch.rand(6, 20, 1, 28, 28, generator=generator, dtype=dtype)
    return tasks.TaskSampler(examples, 3, support, query, seed=seed).sample(num_tasks)


def copy_of(learner, **changes):
    other = tiny_maml(**changes)
    with torch.no_grad():
        for k, v in learner.inner.meta_parameters.items():
            other.inner.meta_parameters[k].copy_(v)
    return other


def take_step(learner, batch, step, optimizer=None, learning_rate=1e-3, total=1):
    """One meta-update by the training loop (with a fresh optimizer unless given); returns the optimizer."""
    optimizer = optimizer or loop.build_optimizer(learner, learning_rate)
    loop.train_step(learner, optimizer, batch, step, learning_rate, total)
    return optimizer


def meta_gradients(learner, batch):
    for tensor in learner.parameters():
        tensor.grad = None
    loss, accuracy = learner.task_metrics(batch, train=True)
    loss.backward()
    grads = {k: v.grad.clone() for k, v in learner.inner.meta_parameters.items()}
    if learner.inner.learn_inner_lrs:
        grads.update({f'lr/{k}': v.grad.clone() for k, v in learner.inner.inner_lrs.items()})
    return loss.detach(), accuracy, grads


def reference_loss(meta, lrs, batch, num_inner_steps):
    """The MAML outer loss written independently: nn layers (ReLU before pooling)
    driven by torch.func.functional_call, one task at a time."""
    layers = []
    for i in range(4):
        layers += [nn.Conv2d(1 if i == 0 else 4, 4, 3, padding=1),
                   nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(), nn.MaxPool2d(2)]
    net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(4, 3)).double()
    names = {}
    for i in range(4):
        names.update({f'{4 * i}.weight': f'conv{i}', f'{4 * i}.bias': f'conv{i}_bias',
                      f'{4 * i + 1}.weight': f'bn{i}_weight', f'{4 * i + 1}.bias': f'bn{i}_bias'})
    names.update({'17.weight': 'head', '17.bias': 'head_bias'})
    losses = []
    for images_support, labels_support, images_query, labels_query in batch:
        phi = {n: meta[k] for n, k in names.items()}
        for _ in range(num_inner_steps):
            loss = F.cross_entropy(torch.func.functional_call(net, phi, (images_support,)), labels_support)
            grads = torch.autograd.grad(loss, list(phi.values()), create_graph=True)
            phi = {n: p - lrs[names[n]] * g for (n, p), g in zip(phi.items(), grads)}
        losses.append(F.cross_entropy(torch.func.functional_call(net, phi, (images_query,)), labels_query))
    return torch.stack(losses).mean()


@pytest.mark.parametrize('num_inner_steps', [1, 2])
def test_outer_loss_matches_independent_oracle(num_inner_steps):
    learner = tiny_maml(num_inner_steps=num_inner_steps)
    batch = random_batch()
    loss, _ = learner.task_metrics(batch, train=True)
    expected = reference_loss(learner.inner.meta_parameters, learner.inner.inner_lrs, batch, num_inner_steps)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    # and the meta-gradients agree with the oracle's
    grads = torch.autograd.grad(loss, list(learner.inner.meta_parameters.values()))
    expected_grads = torch.autograd.grad(expected, list(learner.inner.meta_parameters.values()))
    for g, e in zip(grads, expected_grads):
        assert torch.allclose(g, e, rtol=1e-8, atol=1e-12)


def assert_meta_gradient_matches_finite_differences(learner, batch, min_checked=30):
    """Central differences of the outer loss (float64) at random entries of every
    meta-parameter and inner LR, against the analytic meta-gradient."""
    _, _, grads = meta_gradients(learner, batch)
    generator = torch.Generator().manual_seed(0)
    tensors = {**learner.inner.meta_parameters, **{f'lr/{k}': v for k, v in learner.inner.inner_lrs.items()}}
    eps = 1e-6
    checked = 0
    for name, tensor in tensors.items():
        for _ in range(2 if tensor.numel() > 1 else 1):
            index = int(torch.randint(tensor.numel(), (1,), generator=generator))
            flat = tensor.data.view(-1)
            original = flat[index].item()
            flat[index] = original + eps
            plus = learner.task_metrics(batch, train=False)[0].item()
            flat[index] = original - eps
            minus = learner.task_metrics(batch, train=False)[0].item()
            flat[index] = original
            numeric = (plus - minus) / (2 * eps)
            analytic = grads[name].view(-1)[index].item()
            assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-7), name
            checked += 1
    assert checked > min_checked


def test_second_order_meta_gradient_matches_finite_differences():
    assert_meta_gradient_matches_finite_differences(tiny_maml(num_inner_steps=2, learn_inner_lrs=True, inner_lr=0.2),
                                                    random_batch())


@pytest.mark.parametrize('options', [dict(num_inner_steps=2, learn_inner_lrs=True),
                                     dict(num_inner_steps=1, first_order=True),
                                     dict(num_inner_steps=3, first_order=True, learn_inner_lrs=True)])
def test_vmap_path_agrees_with_per_task_loop(options):
    loop = tiny_maml(vmap_tasks=False, **options)
    vmapped = copy_of(loop, vmap_tasks=True, **options)
    batch = random_batch(num_tasks=3)
    loss_a, acc_a, grads_a = meta_gradients(loop, batch)
    loss_b, acc_b, grads_b = meta_gradients(vmapped, batch)
    assert torch.allclose(loss_a, loss_b, rtol=1e-12)
    for k in acc_a:
        assert torch.allclose(acc_a[k].to(acc_b[k].dtype), acc_b[k]), k
    for k in grads_a:
        assert torch.allclose(grads_a[k], grads_b[k], rtol=1e-9, atol=1e-13), k
    eval_a, eval_b = loop.evaluate(batch), vmapped.evaluate(batch)
    for k in eval_a:
        assert torch.allclose(eval_a[k].to(eval_b[k].dtype), eval_b[k]), k


def test_first_order_is_the_query_gradient_at_the_adapted_parameters():
    second = tiny_maml(num_inner_steps=2)
    first = copy_of(second, num_inner_steps=2, first_order=True)
    batch = random_batch(num_tasks=2)
    _, _, grads_first = meta_gradients(first, batch)
    _, _, grads_second = meta_gradients(second, batch)
    expected = {k: torch.zeros_like(v) for k, v in grads_first.items()}
    for images_support, labels_support, images_query, labels_query in batch:
        adapted, _, _ = first._inner_loop(images_support, labels_support, train=False)
        adapted = {k: v.requires_grad_() for k, v in adapted.items()}
        loss = F.cross_entropy(first.inner.forward(images_query, adapted), labels_query)
        for k, g in zip(adapted, torch.autograd.grad(loss, list(adapted.values()))):
            expected[k] += g / len(batch)
    for k in expected:
        assert torch.allclose(grads_first[k], expected[k], rtol=1e-10, atol=1e-14), k
    assert any(not torch.allclose(grads_first[k], grads_second[k], rtol=1e-3) for k in expected)


def test_inner_loop_graph_only_when_training():
    learner = tiny_maml(num_inner_steps=2, learn_inner_lrs=True)
    batch = random_batch()
    images_support, labels_support, _, _ = next(iter(batch))
    adapted, accuracies, gradients = learner._inner_loop(images_support, labels_support, train=False)
    assert len(accuracies) == 3 and len(gradients) == 2
    assert not any(v.requires_grad for v in adapted.values())
    assert not any(g.requires_grad for step in gradients for g in step.values())
    trained, _, trained_gradients = learner._inner_loop(images_support, labels_support, train=True)
    for name, meta in learner.inner.meta_parameters.items():
        assert adapted[name].shape == trained[name].shape == meta.shape
        assert gradients[1][name].shape == meta.shape
    assert all(v.requires_grad for v in trained.values())
    assert all(g.requires_grad for g in trained_gradients[0].values())  # second order: graph through grads
    for vmap_tasks in (False, True):
        learner.inner.vmap_tasks = vmap_tasks
        assert not any(v.requires_grad for v in learner.evaluate(batch).values())


def test_learned_lrs_at_initial_value_take_the_same_first_step():
    fixed = tiny_maml(learn_inner_lrs=False)
    learned = copy_of(fixed, learn_inner_lrs=True)
    images_support, labels_support, _, _ = next(iter(random_batch()))
    a, acc_a, _ = fixed._inner_loop(images_support, labels_support, train=True)
    b, acc_b, _ = learned._inner_loop(images_support, labels_support, train=True)
    assert acc_a == acc_b
    for k in a:
        assert torch.equal(a[k], b[k])
    assert all(lr.requires_grad for lr in learned.inner.inner_lrs.values())
    assert not any(lr.requires_grad for lr in fixed.inner.inner_lrs.values())


def test_learned_inner_lrs_receive_gradients():
    learner = tiny_maml(num_inner_steps=2, learn_inner_lrs=True)
    _, _, grads = meta_gradients(learner, random_batch())
    lr_grads = [grads[f'lr/{k}'] for k in learner.inner.inner_lrs]
    assert len(lr_grads) == len(learner.inner.meta_parameters)
    assert all(torch.isfinite(g) and g != 0 for g in lr_grads)


def test_outer_step_returns_scalar_loss_and_accuracies():
    learner = tiny_maml()
    loss, pre_support, post_support, post_query = learner._outer_step(random_batch(), train=True)
    assert loss.dim() == 0 and loss.requires_grad
    assert all(0 <= a <= 1 for a in (pre_support, post_support, post_query))


def test_wrong_num_way_at_test_is_a_clear_error():
    learner = tiny_maml()
    examples = torch.rand(6, 20, 1, 28, 28, dtype=torch.float64)
    batch = tasks.TaskSampler(examples, 5, 1, 1).sample(1)
    with pytest.raises(UserError, match='--num_way 3'):
        learner.evaluate(batch)


def synthetic_args(*flags):
    """maml.py's command parsed and checked, for a tiny 3-way model (first the defaults here, then flags)."""
    return cli.parse(maml.PROGRAM, [
        '--num_way', '3', '--num_support', '1', '--num_query', '2', '--batch_size', '2',
        '--num_train_iterations', '5', '--num_test_tasks', '4', '--num_val_tasks', '2', '--learn_inner_lrs',
        '--outer_lr', '0.01', '--num_hidden_channels', '4', *flags])


def build_learner(args, device):
    return registry.algorithm('maml').build_learner(args, registry.dataset('omniglot'), device)


def synthetic_sampler(split, args, seed, device):
    examples = torch.rand(6, 20, 1, 28, 28, generator=torch.Generator().manual_seed(len(split)))
    return tasks.TaskSampler(examples, args.num_way, args.num_support, args.num_query, seed, device)


def test_resume_continues_exactly_with_learned_lrs(tmp_path):
    straight, interrupted = str(tmp_path / 'a'), str(tmp_path / 'b')
    run_with(synthetic_args(), straight, build_learner, synthetic_sampler)
    run_with(synthetic_args('--num_train_iterations', '2'), interrupted, build_learner, synthetic_sampler)
    run_with(synthetic_args('--checkpoint_step', '1'), interrupted, build_learner, synthetic_sampler)
    a = checkpoints.load(straight, 4)['learner']
    b = checkpoints.load(interrupted, 4)['learner']
    for group in ('meta_parameters', 'inner_lrs'):
        for k in a[group]:
            assert torch.equal(a[group][k], b[group][k]), (group, k)
    assert any(v.item() != 0.4 for v in a['inner_lrs'].values())  # the learned rates moved


def test_test_time_inner_steps_may_differ(tmp_path, capsys):
    run_with(synthetic_args('--num_train_iterations', '1'), str(tmp_path), build_learner, synthetic_sampler)
    built = []

    def recording_builder(args, device):
        built.append(args.num_inner_steps)
        return build_learner(args, device)
    run_with(synthetic_args('--test', '--num_inner_steps', '3', '--num_support', '2'), str(tmp_path),
                 recording_builder, synthetic_sampler)
    run_with(synthetic_args('--test', '--num_support', '2'), str(tmp_path), recording_builder, synthetic_sampler)
    assert built == [3, 1]  # given at --test: used; not given: as trained
    assert 'Accuracy over 4 test tasks' in capsys.readouterr().out


def test_log_dir_names_hyperparameters_and_new_flags():
    assert cli.parse(maml.PROGRAM, ['--first_order']).log_dir == (
        './logs/maml/omniglot.way_5.support_1.query_15.inner_steps_1.inner_lr_0.4'
        '.learn_inner_lrs_False.outer_lr_0.001.batch_size_16.first_order_True')


@pytest.mark.slow
def test_short_real_run_is_clearly_above_chance(omniglot_dir, tmp_path):
    """80 meta-updates of 5-way 1-shot second-order MAML (inner lr 0.4) on real
    Omniglot, batches of 8 tasks. Chance is 0.2; such a run reached 0.72 on the
    64 validation tasks, so the bar of 0.5 leaves room for other seeds and CPUs."""
    maml.main(['--num_train_iterations', '80', '--batch_size', '8', '--data_dir', omniglot_dir,
               '--num_val_tasks', '64', '--log_dir', str(tmp_path)])
    assert checkpoints.load(str(tmp_path), 79)['val_score'] > 0.5


@pytest.mark.parametrize('options', [dict(num_inner_steps=5, learn_inner_lrs=True),
                                     dict(num_inner_steps=3, multi_step_loss=True, vmap_tasks=True),
                                     dict(num_inner_steps=2, learner_class=reptile.Reptile)])
def test_a_backward_per_group_of_tasks_gives_the_same_update(options):
    """--tasks_per_backward: the meta-gradient (float64) and the logged metrics equal one backward's."""
    batch = random_batch(num_tasks=5)
    results = []
    for tasks_per_backward in (0, 1, 2):
        learner = tiny_maml(**options)
        optimizer = loop.build_optimizer(learner, 1e-3)
        logged = loop.train_step(learner, optimizer, batch, 0, 1e-3, 10, tasks_per_backward=tasks_per_backward)
        results.append((logged, [p.grad.clone() for p in learner.parameters()]))
    (logged, grads), others = results[0], results[1:]
    assert all(g.abs().sum() > 0 for g in grads)
    for other_logged, other_grads in others:
        assert other_logged == pytest.approx(logged, rel=1e-12)
        for g, h in zip(grads, other_grads):
            torch.testing.assert_close(h, g, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize('vmap_tasks', [False, True])
def test_evaluation_reports_the_unadapted_models_query_accuracy(vmap_tasks):
    learner = tiny_maml(vmap_tasks=vmap_tasks)
    generator = torch.Generator().manual_seed(0)
    classes = torch.rand(6, 1, 1, 28, 28, generator=generator, dtype=torch.float64)  # each class its own pattern
    examples = classes + 0.1 * torch.rand(6, 20, 1, 28, 28, generator=generator, dtype=torch.float64)
    batch = tasks.TaskSampler(examples, 3, 2, 5, seed=0).sample(3)
    metrics = learner.evaluate(batch)
    meta = {k: v.detach() for k, v in learner.inner.meta_parameters.items()}
    expected = torch.stack([tasks.task_accuracy(networks.conv_net(meta, x), y)
                            for x, y in zip(batch.images_query, batch.labels_query)])
    assert torch.equal(metrics['pre_adapt_query'], expected)
    assert not torch.equal(metrics['pre_adapt_query'], metrics['post_adapt_query'])  # adaptation changed something
    assert 'pre_adapt_query' not in learner.loss(batch, 0)[1]  # not in training: it would cost a forward pass
