"""The options for Lake's one-shot challenge: within-alphabet episodes, affine distortions,
larger images from the 105x105 originals, inductive batch norm (each query on its own),
test-time augmentation, runs built from held-out background alphabets, and ProtoNet's cosine metric."""
import io
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import protonet
from fewshot import networks, tasks
from fewshot.algorithms.protonet import COSINE_SCALE, ProtoNet
from fewshot.datasets.omniglot import augment, lake_runs
from fewshot.datasets.omniglot import dataset as omniglot_dataset
from fewshot.datasets.omniglot import source as omniglot_source
from fewshot.errors import UserError


# ---------------------------------------------------------------- within-alphabet episodes

def test_within_group_tasks_draw_every_class_from_one_eligible_group():
    groups = torch.tensor([0] * 6 + [1] * 3 + [2] * 5)  # group 1 is too small for 4-way tasks
    examples = torch.arange(14).view(14, 1, 1).expand(14, 5, 1).clone()  # an example's value is its class
    sampler = tasks.TaskSampler(examples, 4, 1, 2, seed=3, class_groups=groups)
    batch = sampler.sample(200)
    classes = batch.images_support.view(200, 4).long()
    task_groups = groups[classes]  # (200, 4)
    assert (task_groups == task_groups[:, :1]).all()
    assert set(task_groups[:, 0].tolist()) == {0, 2}
    assert all(len(set(row)) == 4 for row in classes.tolist())  # distinct classes
    assert torch.equal(batch.images_query.view(200, 4, 2)[..., 0].long(), classes)  # the query shares its class


def test_within_group_tasks_refuse_a_way_no_group_holds():
    with pytest.raises(UserError, match='--num_way 7 exceeds the 6 classes of the largest group'):
        tasks.TaskSampler(torch.zeros(9, 5, 1), 7, 1, 1, class_groups=torch.tensor([0] * 6 + [1] * 3))


def test_omniglot_within_alphabet_tasks_on_real_data(omniglot_dir):
    _, names = omniglot_source.load_omniglot(omniglot_dir)
    alphabet_of = {}
    images, _ = omniglot_source.load_omniglot(omniglot_dir)
    for i, name in enumerate(names):  # identify a drawing by its pixels
        alphabet_of[images[i, 0].tobytes()] = name.split('/')[0]
    sampler = omniglot_dataset.omniglot_sampler('val', 20, 1, 1, omniglot_dir, seed=0, class_split='lake',
                                                augment_rotations=True, episodes='within_alphabet')
    batch = sampler.sample(30)
    seen = set()
    for task in batch.images_support:
        found = {alphabet_of.get(image[0].numpy().astype(np.uint8).tobytes()) for image in task}
        found.discard(None)  # support drawings other than each character's first
        assert len(found) <= 1
        seen |= found
    assert seen and seen <= set(omniglot_dataset.VALIDATION_ALPHABETS)
    assert batch.images_support.shape[1] == 20  # rotations: none in Lake's validation classes
    assert len(sampler.examples) == len(omniglot_dataset.split_indices('lake', names)['val'])


# ---------------------------------------------------------------- affine distortions

def test_affine_distortion_keeps_shapes_and_is_seeded():
    images = torch.zeros(2, 3, 4, 1, 28, 28)
    images[..., 8:20, 12:16] = 1
    first = augment.random_affine(images, torch.Generator().manual_seed(0))
    again = augment.random_affine(images, torch.Generator().manual_seed(0))
    other = augment.random_affine(images, torch.Generator().manual_seed(1))
    assert first.shape == images.shape and torch.equal(first, again) and not torch.equal(first, other)
    flat = first.flatten(0, 2)
    assert all(not torch.equal(flat[i], flat[0]) for i in range(1, len(flat)))  # one map per image
    ink = first.sum((-1, -2, -3)) / images.sum((-1, -2, -3))
    assert ((ink > 0.5) & (ink < 1.6)).all()  # a distortion, not a loss of the character


def test_identity_map_leaves_images_unchanged_and_a_shift_moves_them(monkeypatch):
    images = torch.rand(5, 1, 28, 28)
    monkeypatch.setattr(augment, 'MAX_ROTATION', 0.0)
    monkeypatch.setattr(augment, 'MAX_SHEAR', 0.0)
    monkeypatch.setattr(augment, 'SCALE_RANGE', (1.0, 1.0))
    monkeypatch.setattr(augment, 'MAX_SHIFT', 0.0)
    assert torch.allclose(augment.random_affine(images, torch.Generator()), images, atol=1e-5)
    monkeypatch.setattr(augment, '_uniform', lambda low, high, count, g: torch.full((count,), float(high)))
    monkeypatch.setattr(augment, 'SCALE_RANGE', (1.0, 1.0))
    monkeypatch.setattr(augment, 'MAX_SHIFT', 2 / 14)  # each output pixel samples 2 pixels right and down
    shifted = augment.random_affine(images, torch.Generator())
    assert torch.allclose(shifted[..., :-2, :-2], images[..., 2:, 2:], atol=1e-5)


# ---------------------------------------------------------------- elastic distortions

def test_elastic_fields_are_smooth_and_the_same_distortion_at_every_size():
    for size in (28, 56):
        fields = augment.elastic_fields(64, size, torch.Generator().manual_seed(0))
        assert fields.shape == (64, size, size, 2)
        rms = fields.square().mean().sqrt()
        assert rms == pytest.approx(augment.ELASTIC_RMS, rel=0.15)  # in half-widths: the same at both sizes
        for lag, low, high in ((size // 28, 0.9, 1), (size // 7, 0.65, 0.9)):  # exp(-lag^2 / (4 sigma^2)) for lag
            apart = torch.stack([fields[:, :, :-lag].flatten(), fields[:, :, lag:].flatten()])  # 1/28, 1/7 of the side
            assert low < torch.corrcoef(apart)[0, 1] < high
    first, again, other = (augment.elastic_fields(8, 28, torch.Generator().manual_seed(seed)) for seed in (0, 0, 1))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_elastic_distortion_keeps_shapes_and_ink_and_is_seeded_and_zero_leaves_images(monkeypatch):
    images = torch.zeros(2, 3, 4, 1, 28, 28)
    images[..., 8:20, 12:16] = 1
    first = augment.random_distortion(images, torch.Generator().manual_seed(0), affine=False, elastic=True)
    again = augment.random_distortion(images, torch.Generator().manual_seed(0), affine=False, elastic=True)
    assert first.shape == images.shape and torch.equal(first, again) and not torch.equal(first, images)
    flat = first.flatten(0, 2)
    assert all(not torch.equal(flat[i], flat[0]) for i in range(1, len(flat)))  # one field per image
    ink = first.sum((-1, -2, -3)) / images.sum((-1, -2, -3))
    assert ((ink > 0.6) & (ink < 1.6)).all()  # a distortion, not a loss of the character
    both = augment.random_distortion(images, torch.Generator().manual_seed(0), affine=True, elastic=True)
    affine = augment.random_affine(images, torch.Generator().manual_seed(0))
    assert not torch.equal(both, affine)
    monkeypatch.setattr(augment, 'ELASTIC_RMS', 0.0)
    assert torch.allclose(augment.random_distortion(images, torch.Generator(), affine=False, elastic=True), images,
                          atol=1e-5)
    assert torch.allclose(augment.random_distortion(images, torch.Generator().manual_seed(0), affine=True,
                                                    elastic=True), affine, atol=1e-5)  # the affine map's draws first


@pytest.mark.parametrize('affine, elastic', [(True, False), (False, True), (True, True)])
def test_distortions_reach_training_tasks_only(omniglot_dir, affine, elastic):
    args = type('Args', (), dict(num_way=5, num_support=1, num_query=1, data_dir=omniglot_dir, augment_rotations=False,
                                 class_split='lake', image_size=28, episodes='random', train_episodes=None,
                                 augment_affine=affine, augment_elastic=elastic))
    train, val = (omniglot_dataset.Omniglot().build_sampler(split, args, 0, 'cpu').sample(2) for split in ('train', 'val'))
    assert train.images_support.shape == val.images_support.shape == (2, 5, 1, 28, 28)
    assert not torch.isin(train.images_support, torch.tensor([0.0, 1.0])).all()  # resampled
    assert torch.isin(val.images_support, torch.tensor([0.0, 1.0])).all()
    assert train.labels_support.tolist() == [[0, 1, 2, 3, 4]] * 2
    args.augment_affine = args.augment_elastic = False
    plain = omniglot_dataset.Omniglot().build_sampler('train', args, 0, 'cpu').sample(2)
    assert torch.isin(plain.images_support, torch.tensor([0.0, 1.0])).all()


# ---------------------------------------------------------------- larger images

def test_larger_images_are_made_from_the_originals(omniglot_dir):
    images, names = omniglot_source.load_omniglot(omniglot_dir, image_size=56)
    assert images.shape == (1623, 20, 56, 56) and set(np.unique(images)) == {0, 1}
    with zipfile.ZipFile(f'{omniglot_dir}/images_evaluation.zip') as archive:
        entry = sorted(n for n in archive.namelist() if n.startswith(f'images_evaluation/{names[-1]}/'))[-1]
        original = np.asarray(Image.open(io.BytesIO(archive.read(entry))).convert('L'), dtype=np.float64)
    ratio = 105 / 56  # output pixel i: the original pixels round(i * ratio) .. round((i + 1) * ratio) - 1
    bounds = np.floor(np.arange(57) * ratio + 0.5)
    inside = (np.arange(105) >= bounds[:-1, None]) & (np.arange(105) < bounds[1:, None])
    weights = inside / inside.sum(1, keepdims=True)  # (56, 105)
    coverage = weights @ (original < 128) @ weights.T  # the fraction of each output pixel that is ink
    agree = images[-1, -1] == (coverage > 0.5)
    assert np.all(np.abs(coverage[~agree] - 0.5) < 0.05)  # PIL's 8-bit rounding near a tie


def test_image_size_reaches_the_network_the_checkpoint_and_the_test(omniglot_dir, tmp_path, capsys, monkeypatch):
    flags = ['--data_dir', omniglot_dir, '--log_dir', str(tmp_path), '--num_hidden_channels', '3', '--batch_size', '1',
             '--num_val_tasks', '1', '--num_query', '1', '--split', 'lake']
    protonet.main(['--image_size', '56', '--num_train_iterations', '1', *flags])
    state = torch.load(tmp_path / 'state0.pt', weights_only=False)
    assert state['args']['image_size'] == 56
    seen = []
    real = omniglot_dataset.omniglot_sampler
    monkeypatch.setattr(omniglot_dataset, 'omniglot_sampler', lambda *a, **k: seen.append(a[9]) or real(*a, **k))
    protonet.main(['--test', '--num_test_tasks', '1', '--log_dir', str(tmp_path), '--data_dir', omniglot_dir])
    assert seen == [56] and 'Accuracy over 1 test tasks' in capsys.readouterr().out
    params, forward = omniglot_dataset.Omniglot().network(type('A', (), {'num_hidden_channels': 3, 'image_size': 84}),
                                                          num_outputs=20)
    assert forward(params, torch.zeros(2, 1, 84, 84)).shape == (2, 20) and params['head'].shape == (20, 3 * 25)


def test_a_resized_source_of_another_size_is_refused_not_resized():
    buffer = io.BytesIO()
    Image.new('1', (30, 30), 1).save(buffer, format='PNG')
    with pytest.raises(ValueError, match='expected 28x28'):
        omniglot_source.png_to_ink(buffer.getvalue(), 28, resize=False)
    assert omniglot_source.png_to_ink(buffer.getvalue(), 28).shape == (28, 28)


def test_larger_images_without_the_originals_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r'images_background.zip and images_evaluation.zip \(--image_size 56'):
        omniglot_source.load_omniglot(str(tmp_path), download=False, image_size=56)


# ---------------------------------------------------------------- each query on its own

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


class SharedStatistics:
    """A learner double whose queries share batch statistics: the line must say so."""
    key_metric, num_outputs = 'query', None

    def parameters(self):
        return [torch.zeros(1)]

    def evaluate(self, batch):
        return {'query': torch.ones(len(batch))}

    def queries_alone(self):
        from fewshot import contracts
        return contracts.Learner.queries_alone(self)


def test_lake_line_says_when_queries_shared_statistics(omniglot_dir, tmp_path, capsys):
    path = str(tmp_path / 'runs.zip')
    lake_runs.build_runs(f'{omniglot_dir}/images_evaluation.zip', path, num_runs=1)
    args = type('Args', (), {'class_split': 'lake', 'lake_runs': path, 'data_dir': omniglot_dir, 'image_size': 28})
    lake_runs.lake_test(SharedStatistics(), args, 'D')
    assert capsys.readouterr().out.splitlines()[-1].endswith(
        'transductive: the test images of a run shared batch-norm statistics')


def test_runs_of_held_out_background_alphabets(omniglot_dir, tmp_path):
    path = str(tmp_path / 'val_runs.zip')
    built = lake_runs.build_runs(f'{omniglot_dir}/images_background.zip', path, num_runs=6,
                                 alphabets=omniglot_dataset.VALIDATION_ALPHABETS)
    for classes, order in built:
        alphabets = {character.split('/')[0] for character, _, _ in classes}
        assert len(alphabets) == 1 and alphabets <= set(omniglot_dataset.VALIDATION_ALPHABETS)
        assert len({c for c, _, _ in classes}) == 20 and sorted(order) == list(range(20))
    names, batch = lake_runs.read_runs(path, image_size=56)
    assert batch.images_support.shape == (6, 20, 1, 56, 56) and len(names) == 6


def test_an_interrupted_build_leaves_no_runs_behind(omniglot_dir, tmp_path, monkeypatch):
    path = tmp_path / 'val_runs.zip'
    written = []

    def stop_at_the_second_run(self, name, data, *rest):
        if name.startswith('run02/'):
            raise KeyboardInterrupt
        written.append(name)
        return real_writestr(self, name, data, *rest)
    real_writestr = zipfile.ZipFile.writestr
    monkeypatch.setattr(zipfile.ZipFile, 'writestr', stop_at_the_second_run)
    with pytest.raises(KeyboardInterrupt):
        lake_runs.build_runs(f'{omniglot_dir}/images_background.zip', str(path), num_runs=2,
                             alphabets=omniglot_dataset.VALIDATION_ALPHABETS)
    assert len(written) == 41 and list(tmp_path.iterdir()) == []  # run 1 written, then nothing kept


# ---------------------------------------------------------------- test-time augmentation

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
    generator = torch.Generator().manual_seed(0)
    views = [(batch.images_support, batch.images_query)]
    views += [(augment.random_affine(batch.images_support, generator), augment.random_affine(batch.images_query, generator))
              for _ in range(2)]
    support = sum(torch.stack([encoder(s[t]) for t in range(2)]) for s, _ in views) / 3
    query = sum(torch.stack([encoder(q[t]) for t in range(2)]) for _, q in views) / 3
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
    params, forward = omniglot_dataset.Omniglot().network(type('A', (), {'num_hidden_channels': 3, 'image_size': 28}))
    learner = ProtoNet(networks.FunctionalNet(forward, params), metric='cosine')
    learner.load_state(state['learner'])
    assert learner.cosine_scale == scale and learner.parameters()[-1] is learner.cosine_scale
