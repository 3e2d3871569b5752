"""The MAML variants (Adagrad inner loop, derivative-order annealing, LSLR,
multi-step loss, cosine outer LR, ANIL), Reptile, and sinusoid regression."""
import math

import pytest
import torch
import torch.nn.functional as F

import maml
from fewshot import cli, networks, runtime
from fewshot.engine import checkpoints, evaluation, loop
from fewshot.errors import UserError
from test_maml import (assert_meta_gradient_matches_finite_differences, copy_of, meta_gradients, random_batch,
                       take_step, tiny_maml)


def support_of_first_task():
    images, labels, _, _ = next(iter(random_batch()))
    return images, labels


def test_adagrad_inner_steps_match_a_hand_computation():
    lr, eps = 0.3, 0.7
    learner = tiny_maml(num_inner_steps=2, inner_lr=lr, inner_optimizer='adagrad', inner_adagrad_eps=eps)
    images, labels = support_of_first_task()
    adapted, _, _ = learner._inner_loop(images, labels, train=False)

    def gradient(params):
        params = {k: v.detach().requires_grad_() for k, v in params.items()}
        loss = F.cross_entropy(networks.conv_net(params, images), labels)
        return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    theta = {k: v.detach() for k, v in learner.inner.meta_parameters.items()}
    g1 = gradient(theta)
    n1 = {k: g1[k] ** 2 for k in theta}
    phi1 = {k: theta[k] - lr * g1[k] / torch.sqrt(n1[k] + eps) for k in theta}
    g2 = gradient(phi1)
    phi2 = {k: phi1[k] - lr * g2[k] / torch.sqrt(n1[k] + g2[k] ** 2 + eps) for k in theta}
    sgd, _, _ = copy_of(learner, num_inner_steps=2, inner_lr=lr)._inner_loop(images, labels, train=False)
    for k in theta:
        assert torch.allclose(adapted[k], phi2[k], rtol=1e-10, atol=1e-12), k
    assert any(not torch.allclose(adapted[k], sgd[k]) for k in theta)


@pytest.mark.parametrize('variants', [dict(learn_inner_lrs_per_step=True),
                                      dict(inner_optimizer='adagrad', learn_inner_lrs_per_step=True)])
def test_lslr_and_adagrad_meta_gradients_match_finite_differences(variants):
    learner = tiny_maml(num_inner_steps=2, inner_lr=0.2, **variants)
    assert all(lr.shape == (2,) and lr.requires_grad for lr in learner.inner.inner_lrs.values())
    assert set(learner.inner.inner_lrs) == set(learner.inner.meta_parameters)
    assert_meta_gradient_matches_finite_differences(learner, random_batch(), min_checked=40)
    _, _, grads = meta_gradients(learner, random_batch())
    assert all((grads[f'lr/{k}'] != 0).all() for k in learner.inner.inner_lrs)  # each step's rate is trained


def test_lslr_past_the_trained_steps_uses_the_last_rate():
    learner = tiny_maml(num_inner_steps=2, learn_inner_lrs_per_step=True)
    with torch.no_grad():
        for lr in learner.inner.inner_lrs.values():
            lr.copy_(torch.tensor([0.1, 0.2]))
    assert learner.inner.inner_lr('conv0', 0).item() == pytest.approx(0.1)
    assert learner.inner.inner_lr('conv0', 5).item() == pytest.approx(0.2)


def test_derivative_order_annealing_switches_at_step_n():
    batch = random_batch()
    annealed = tiny_maml(num_inner_steps=1, anneal_derivative_order=3)
    first, second = copy_of(annealed, first_order=True), copy_of(annealed)

    def gradients_of_step(learner, step):
        copy = copy_of(learner, first_order=learner.first_order, anneal_derivative_order=3 if learner is annealed else 0)
        take_step(copy, batch, step)
        return {k: v.grad for k, v in copy.inner.meta_parameters.items()}

    def same(a, b):
        return all(torch.allclose(a[k], b[k], rtol=1e-10, atol=1e-14) for k in a)
    before = gradients_of_step(annealed, 2)
    after = gradients_of_step(annealed, 3)
    assert same(before, gradients_of_step(first, 2)) and not same(before, gradients_of_step(second, 2))
    assert same(after, gradients_of_step(second, 3)) and not same(after, gradients_of_step(first, 3))


def test_anil_adapts_only_the_head_but_meta_learns_the_body():
    learner = tiny_maml(num_inner_steps=2, anil=True)
    images, labels = support_of_first_task()
    adapted, _, gradients = learner._inner_loop(images, labels, train=True)
    for k, meta in learner.inner.meta_parameters.items():
        if k.startswith('head'):
            assert not torch.equal(adapted[k], meta), k
        else:
            assert adapted[k] is meta, k
    assert set(gradients[0]) == {'head', 'head_bias'} and set(learner.inner.inner_lrs) == {'head', 'head_bias'}
    _, _, grads = meta_gradients(learner, random_batch())
    assert all(grads[k].abs().sum() > 0 for k in learner.inner.meta_parameters)


def test_multi_step_loss_weights_and_loss():
    learner = tiny_maml(num_inner_steps=3, multi_step_loss=True, num_train_iterations=1000)
    start, end = learner._multi_step_weights(0), learner._multi_step_weights(100)
    assert torch.allclose(start, torch.full((3,), 1 / 3)) and start.sum().item() == pytest.approx(1)
    assert torch.allclose(end[:2], torch.full((2,), 0.01)) and end[2].item() == pytest.approx(0.98)
    assert learner._multi_step_weights(50)[0] < start[0] and learner._multi_step_weights(5000)[0] == end[0]
    batch = random_batch()
    weights = learner._multi_step_weights(30)
    loss, _ = learner.task_metrics(batch, train=True, loss_weights=weights)
    expected = 0
    for images_support, labels_support, images_query, labels_query in batch:
        history, _, _ = learner.inner.adapt(images_support, labels_support, create_graph=True, train=True)
        expected += sum(w * F.cross_entropy(networks.conv_net(history[s + 1], images_query), labels_query)
                        for s, w in enumerate(weights.tolist())) / len(batch)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)


def test_cosine_outer_lr():
    learner = tiny_maml(cosine_outer_lr=True, num_train_iterations=100)
    assert learner.lr_schedule == 'cosine' and learner.lr_tag == 'outer_lr'
    assert loop.learning_rate_at('cosine', 0.01, 0, 100) == pytest.approx(0.01)
    assert loop.learning_rate_at('cosine', 0.01, 50, 100) == pytest.approx(0.005)
    optimizer = take_step(learner, random_batch(), 75, learning_rate=0.01, total=100)
    assert optimizer.param_groups[0]['lr'] == pytest.approx(0.01 * (1 + math.cos(0.75 * math.pi)) / 2)
    assert tiny_maml().lr_schedule == 'constant'
    assert loop.learning_rate_at('constant', 0.01, 75, 100) == 0.01


def test_vmap_path_agrees_with_loop_for_the_variants():
    options = dict(num_inner_steps=2, inner_optimizer='adagrad', learn_inner_lrs_per_step=True, anil=True,
                   multi_step_loss=True, num_train_iterations=100)
    loop = tiny_maml(**options)
    vmapped = copy_of(loop, vmap_tasks=True, **options)
    batch = random_batch(num_tasks=3)
    weights = loop._multi_step_weights(3)
    results = []
    for learner in (loop, vmapped):
        loss, metrics = learner.task_metrics(batch, train=True, loss_weights=weights)
        tensors = list(learner.inner.meta_parameters.values()) + list(learner.inner.inner_lrs.values())
        results.append((loss, metrics, torch.autograd.grad(loss, tensors)))
    (loss_a, metrics_a, grads_a), (loss_b, metrics_b, grads_b) = results
    assert torch.allclose(loss_a, loss_b, rtol=1e-12)
    for k in metrics_a:
        assert torch.allclose(metrics_a[k].to(metrics_b[k].dtype), metrics_b[k]), k
    for a, b in zip(grads_a, grads_b):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-13)


# ---------------------------------------------------------------- Reptile


# ---------------------------------------------------------------- sinusoid


# ---------------------------------------------------------------- real Omniglot

@pytest.mark.parametrize('flags, steps, bar, gain', [
    (['--first_order'], 80, 0.3, 0.1),  # measured: 0.44 after 80 steps (chance 0.2)
    (['--algorithm', 'reptile', '--num_inner_steps', '5', '--inner_lr', '0.1'], 40, 0.6, 0.05)])  # 0.73 -> 0.82
@pytest.mark.slow
def test_short_real_runs_are_clearly_above_chance(omniglot_dir, tmp_path, flags, steps, bar, gain):
    """A few dozen meta-updates of 8 tasks, 5-way 1-shot, on real Omniglot: first-order MAML and
    Reptile. Fine-tuning an untrained conv net already scores well above chance (0.73 with
    Reptile's 5 steps), so the run must also beat its own starting point."""
    argv = [*flags, '--num_train_iterations', str(steps), '--batch_size', '8', '--data_dir', omniglot_dir,
            '--num_val_tasks', '64', '--val_interval', '100', '--log_dir', str(tmp_path)]
    command = cli.parse(maml.PROGRAM, argv)
    args, algorithm, dataset = command.args, command.algorithm, command.dataset
    runtime.seed_everything(args.seed)  # the same initialisation as a run's
    untrained = evaluation.validate(algorithm.build_learner(args, dataset, 'cpu'),
                                  dataset.build_sampler('val', args, evaluation.VAL_SEED, 'cpu'), args)
    maml.main(argv)
    trained = checkpoints.load(str(tmp_path), steps - 1)['val_score']
    assert trained > bar and trained > untrained['post_adapt_query'] + gain, (untrained, trained)


# ---------------------------------------------------------------- per-step batch norm

def test_per_step_bn_keeps_separate_statistics_and_weights_per_step():
    learner = tiny_maml(num_inner_steps=2, per_step_bn=True, inner_lr=0.3)
    assert learner.inner.meta_parameters['bn0_weight'].shape == (3, 4) and not learner.inner.vmap_tasks
    assert 'bn0_weight' not in learner.inner.adapted_keys and 'conv0' in learner.inner.adapted_keys
    take_step(learner, random_batch(), 0)
    means = [row[0][0] for row in learner.inner.per_step_bn.running]  # block 0's running mean at steps 0, 1, 2
    assert all(m.abs().sum() > 0 for m in means)
    assert not torch.allclose(means[0], means[1]) and not torch.allclose(means[1], means[2])
    grad = learner.inner.meta_parameters['bn1_weight'].grad
    assert all(grad[row].abs().sum() > 0 for row in range(3))  # every step's BN weights are meta-learned


def test_per_step_bn_evaluation_is_not_transductive():
    """With running statistics, a query example's prediction no longer depends on
    the other query examples in its batch; with batch statistics it does."""
    images = random_batch().images_query[0]
    for per_step_bn, independent in ((True, True), (False, False)):
        learner = tiny_maml(num_inner_steps=1, per_step_bn=per_step_bn)
        if per_step_bn:
            take_step(learner, random_batch(), 0)  # non-trivial running statistics
        params = {k: v.detach() for k, v in learner.inner.meta_parameters.items()}
        with torch.no_grad():
            alone = learner.inner.forward(images[:2], params, 1)
            together = learner.inner.forward(images, params, 1)[:2]
        assert torch.allclose(alone, together, atol=1e-10) == independent


def test_per_step_bn_state_round_trip_and_step_mismatch():
    learner = tiny_maml(num_inner_steps=2, per_step_bn=True)
    take_step(learner, random_batch(), 0)
    other = tiny_maml(num_inner_steps=2, per_step_bn=True, seed=5)
    other.load_state(learner.state())
    for row_a, row_b in zip(learner.inner.per_step_bn.running, other.inner.per_step_bn.running):
        for (mean_a, var_a), (mean_b, var_b) in zip(row_a, row_b):
            assert torch.equal(mean_a, mean_b) and torch.equal(var_a, var_b)
    assert learner.evaluate(random_batch())['post_adapt_query'].tolist() == \
        other.evaluate(random_batch())['post_adapt_query'].tolist()
    with pytest.raises(UserError, match='--num_inner_steps 2'):
        tiny_maml(num_inner_steps=5, per_step_bn=True).load_state(learner.state())
