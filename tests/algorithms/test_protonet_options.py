"""ProtoNet's options: inductive batch norm (each query on its own), test-time augmentation
(--test_views), the cosine metric, running batch-norm statistics (--running_statistics)."""
import pytest
import torch
import torch.nn.functional as F
import protonet
from fewshot import networks, tasks
from fewshot.algorithms.protonet import COSINE_SCALE, ProtoNet
from fewshot.datasets.omniglot import augment
from fewshot.datasets.omniglot import dataset as omniglot_dataset
from fewshot.errors import UserError


def inductive_reference(encoder, support, query):
    """Query embeddings the textbook way: nn.Conv2d layers, each batch norm with the biased
    mean and variance of the support images' activations alone."""
    s, q = support, query
    for i in range(4):
        conv = torch.nn.Conv2d(s.shape[1], encoder.params[f'conv{i}'].shape[0], 3, padding=1).double()
        conv.weight.data, conv.bias.data = encoder.params[f'conv{i}'].data, encoder.params[f'conv{i}_bias'].data
        s, q = conv(s), conv(q)
        mean, var = s.mean((0, 2, 3), keepdim=True), s.var((0, 2, 3), unbiased=False, keepdim=True)
        w, b = encoder.params[f'bn{i}_weight'].view(1, -1, 1, 1), encoder.params[f'bn{i}_bias'].view(1, -1, 1, 1)
        s, q = [F.max_pool2d(F.relu((x - mean) / torch.sqrt(var + networks.BN_EPS) * w + b), 2) for x in (s, q)]
    return s.flatten(1), q.flatten(1)


def test_inductive_evaluation_classifies_each_query_from_the_support_alone():
    torch.manual_seed(0)
    params = networks.init_conv_params(4, 1, 5, dtype=torch.float64)
    for name, value in params.items():
        if name.startswith('bn'):
            value.uniform_(0.5, 1.5) if name.endswith('weight') else value.uniform_(-0.3, 0.3)
    encoder = networks.FunctionalNet(networks.conv_features, params)
    generator = torch.Generator().manual_seed(2)
    batch = tasks.TaskSampler(torch.rand(8, 6, 1, 28, 28, generator=generator, dtype=torch.float64), 4, 2, 3,
                              seed=1).sample(2)
    for tasks_per_call in (1, None):
        learner = ProtoNet(encoder, tasks_per_call=tasks_per_call)
        _, transductive = learner.logits(batch)
        _, logits = learner.logits(batch, inductive=True)
        for t in range(2):
            support, query = inductive_reference(encoder, batch.images_support[t], batch.images_query[t])
            prototypes = torch.stack([support[batch.labels_support[t] == c].mean(0) for c in range(4)])
            assert torch.allclose(logits[t], -torch.cdist(query, prototypes) ** 2, atol=1e-8)
        assert not torch.allclose(logits, transductive)
        changed = tasks.TaskBatch(batch.images_support, batch.labels_support,
                                  torch.cat([batch.images_query[:, :1], batch.images_query[:, 1:].flip(0)], 1),
                                  batch.labels_query)
        assert torch.allclose(learner.logits(changed, inductive=True)[1][:, 0], logits[:, 0], atol=1e-10)
        assert not learner.inductive
        with learner.queries_alone() as alone:
            assert alone and learner.inductive
        assert not learner.inductive


def test_train_inductive_trains_on_the_loss_of_inductive_logits():
    torch.manual_seed(0)
    encoder = networks.FunctionalNet(networks.conv_features, networks.init_conv_params(4, 1, 4, dtype=torch.float64))
    batch = tasks.TaskSampler(torch.rand(6, 5, 1, 28, 28, dtype=torch.float64), 3, 1, 2, seed=0).sample(2)
    loss, _ = ProtoNet(encoder, train_inductive=True).loss(batch, 0)
    _, logits = ProtoNet(encoder).logits(batch, inductive=True)
    assert torch.allclose(loss, F.cross_entropy(logits.flatten(0, 1), batch.labels_query.flatten()))
    assert not torch.allclose(loss, ProtoNet(encoder).loss(batch, 0)[0])


def test_test_views_average_distorted_embeddings_and_one_view_changes_nothing():
    torch.manual_seed(0)
    encoder = networks.FunctionalNet(networks.conv_features, networks.init_conv_params(4, 1, 4, dtype=torch.float64))
    batch = tasks.TaskSampler(torch.rand(6, 5, 1, 28, 28, dtype=torch.float64), 3, 1, 2, seed=0).sample(2)

    def refuse(images, generator):
        raise AssertionError('distorted with one view')
    plain = ProtoNet(encoder).logits(batch)
    assert all(torch.equal(a, b) for a, b in zip(ProtoNet(encoder, distort=refuse).logits(batch), plain))
    assert torch.equal(ProtoNet(encoder, test_views=1, distort=refuse).evaluate(batch)['query'],
                       ProtoNet(encoder).evaluate(batch)['query'])
    learner = ProtoNet(encoder, test_views=3, distort=augment.random_affine)
    _, logits = learner.logits(batch, views=3)

    def task_views(t):  # a task's copies come from a generator of its own: the same evaluated alone or batched
        generator = torch.Generator().manual_seed(0)
        support, query = batch.images_support[t:t + 1], batch.images_query[t:t + 1]
        copies = [(support, query)] + [(augment.random_affine(support, generator),
                                        augment.random_affine(query, generator)) for _ in range(2)]
        return sum(encoder(s[0]) for s, _ in copies) / 3, sum(encoder(q[0]) for _, q in copies) / 3
    support, query = map(torch.stack, zip(*[task_views(t) for t in range(2)]))
    expected = -torch.cdist(query, support) ** 2  # one support image per class: it is the prototype
    assert torch.allclose(logits, expected, atol=1e-8) and not torch.allclose(logits, plain[1])


def test_test_views_without_distortions_is_one_line():
    from fewshot.algorithms.protonet import ProtoNetAlgorithm
    from fewshot.datasets.metabolism.dataset import Metabolism
    args = type('Args', (), {'test_views': 2})
    with pytest.raises(UserError, match='--test_views 2: --dataset metabolism has no distortions'):
        ProtoNetAlgorithm().build_learner(args, Metabolism(), 'cpu')


def test_cosine_logits_are_the_scaled_cosines_to_the_prototypes():
    torch.manual_seed(0)
    encoder = networks.FunctionalNet(networks.conv_features, networks.init_conv_params(4, 1, 4, dtype=torch.float64))
    batch = tasks.TaskSampler(torch.rand(6, 5, 1, 28, 28, dtype=torch.float64), 3, 2, 2, seed=0).sample(2)
    learner = ProtoNet(encoder, metric='cosine')
    with torch.no_grad():
        learner.cosine_scale.fill_(7.0)
    _, logits = learner.logits(batch)
    support, query = learner.embed(batch.images_support), learner.embed(batch.images_query)
    for t in range(2):
        for c in range(3):
            prototype = support[t][batch.labels_support[t] == c].mean(0, keepdim=True)
            assert torch.allclose(logits[t, :, c], 7.0 * F.cosine_similarity(query[t], prototype, dim=-1))
    assert ProtoNet(encoder).cosine_scale is None and len(ProtoNet(encoder).parameters()) == len(encoder.params)


def test_the_cosine_scale_is_trained_and_kept_in_the_checkpoint(omniglot_dir, tmp_path):
    protonet.main(['--metric', 'cosine', '--data_dir', omniglot_dir, '--log_dir', str(tmp_path), '--batch_size', '1',
                   '--num_hidden_channels', '3', '--num_val_tasks', '1', '--num_train_iterations', '2'])
    state = torch.load(tmp_path / 'state1.pt', weights_only=False)
    scale = state['learner']['cosine_scale']
    assert state['args']['metric'] == 'cosine' and float(scale) != COSINE_SCALE
    shape = type('A', (), {'num_hidden_channels': 3, 'image_size': 28, 'batch_norm_init': 'ones'})
    params, forward = omniglot_dataset.Omniglot().network(shape)
    learner = ProtoNet(networks.FunctionalNet(forward, params), metric='cosine')
    learner.load_state(state['learner'])
    assert learner.cosine_scale == scale and learner.parameters()[-1] is learner.cosine_scale


def torch_modules(encoder):
    """The encoder as nn.Conv2d, nn.BatchNorm2d (momentum 0.1), ReLU and max-pool modules, same weights."""
    layers = []
    for i in range(4):
        weight = encoder.params[f'conv{i}']
        conv = torch.nn.Conv2d(weight.shape[1], weight.shape[0], 3, padding=1).double()
        norm = torch.nn.BatchNorm2d(weight.shape[0], eps=networks.BN_EPS, momentum=0.1).double()
        conv.weight.data, conv.bias.data = weight.data.clone(), encoder.params[f'conv{i}_bias'].data.clone()
        norm.weight.data, norm.bias.data = (encoder.params[f'bn{i}_weight'].data.clone(),
                                            encoder.params[f'bn{i}_bias'].data.clone())
        layers += [conv, norm, torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
    return torch.nn.Sequential(*layers, torch.nn.Flatten())


def test_running_statistics_train_and_evaluate_as_torch_batch_norm_modules():
    """Two training calls of one task each, then an evaluation call: outputs and running statistics
    as torch.nn.BatchNorm2d's in train() and eval() mode; with two tasks in one call the running
    statistics move by the mean of what each task alone would move them by."""
    torch.manual_seed(0)
    params = networks.init_conv_params(4, 1, 5, dtype=torch.float64)
    for name, value in params.items():
        if name.startswith('bn'):
            value.uniform_(0.5, 1.5) if name.endswith('weight') else value.uniform_(-0.3, 0.3)
    encoder = networks.RunningStatisticsNet(networks.conv_features, params)
    reference = torch_modules(encoder)
    images = torch.rand(3, 6, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 3
    reference.train()
    for x in images[:2]:
        with networks.training():
            ours = encoder(x)
        torch.testing.assert_close(ours, reference(x), rtol=1e-10, atol=1e-10)
    for i, norm in enumerate(reference[1::4]):
        torch.testing.assert_close(getattr(encoder, f'running_mean{i}'), norm.running_mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(getattr(encoder, f'running_var{i}'), norm.running_var, rtol=1e-10, atol=1e-12)
    reference.eval()
    torch.testing.assert_close(encoder(images[2]), reference(images[2]), rtol=1e-10, atol=1e-10)
    assert not torch.allclose(encoder(images[2]), networks.FunctionalNet(networks.conv_features, params)(images[2]))

    together, alone = (networks.RunningStatisticsNet(networks.conv_features, params) for _ in range(2))
    with networks.training():
        together(images[:2].flatten(0, 1), num_tasks=2)
        moved = []
        for x in images[:2]:
            single = networks.RunningStatisticsNet(networks.conv_features, params)
            single(x)
            moved.append(single.running_var3)
    torch.testing.assert_close(together.running_var3, torch.stack(moved).mean(0), rtol=1e-10, atol=1e-12)


def test_running_statistics_are_a_protonet_flag_kept_in_checkpoints():
    from fewshot import cli
    command = cli.parse(protonet.PROGRAM, ['--running_statistics', '--num_hidden_channels', '4'])
    learner = command.build_learner(command.args, torch.device('cpu'))
    assert {'running_mean0', 'running_var3'} <= set(learner.state()['network'])
    assert len(learner.buffers()) == 8 and '.running_statistics_True' in command.log_dir
    plain = cli.parse(protonet.PROGRAM, ['--num_hidden_channels', '4'])
    assert plain.build_learner(plain.args, torch.device('cpu')).buffers() == []
