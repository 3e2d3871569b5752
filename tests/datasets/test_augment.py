"""Omniglot's training distortions (--augment_affine, --augment_elastic): shapes, seeds, smoothness, ink, and training tasks only."""
import pytest
import torch
from fewshot.datasets.omniglot import augment
from fewshot.datasets.omniglot import dataset as omniglot_dataset


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
