"""The Omniglot source, cache and split."""
import csv
import os
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

import conftest
from fewshot.errors import UserError
from fewshot.datasets.omniglot import source as omniglot_source
from fewshot import files, registry
from fewshot.datasets.omniglot import dataset as omniglot_dataset
from fewshot.flags import TASKS


def test_split_is_fixed_disjoint_and_complete():
    splits = omniglot_dataset.split_indices()
    assert [len(splits[s]) for s in ('train', 'val', 'test')] == [1100, 100, 423]
    together = np.concatenate(list(splits.values()))
    assert np.array_equal(np.sort(together), np.arange(1623))
    assert np.array_equal(omniglot_dataset.split_indices()['val'], splits['val'])


def test_rotation_augmentation_makes_four_classes_per_character():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 2, size=(1623, 20, 28, 28), dtype=np.uint8)
    plain = omniglot_dataset.omniglot_split(images, 'val')
    rotated = omniglot_dataset.omniglot_split(images, 'val', augment_rotations=True)
    assert plain.shape == (100, 20, 1, 28, 28) and rotated.shape == (400, 20, 1, 28, 28)
    character = omniglot_dataset.split_indices()['val'][7]
    for r in range(4):
        expected = torch.rot90(torch.from_numpy(images[character]), r, dims=(-2, -1))
        assert torch.equal(rotated[4 * 7 + r, :, 0], expected)


def test_cache_is_rebuilt_when_stale_or_corrupt(tmp_path):
    images = np.zeros((1623, 20, 28, 28), np.uint8)
    images[5, 3, 4, 4] = 1
    names = [f'a/c{i:04d}' for i in range(1623)]
    path = str(tmp_path / 'cache.npz')
    files.write_keyed_arrays(path, 'key1', images=images, names=np.array(names))
    got, got_names = omniglot_source._read_cache(path, 'key1')
    assert np.array_equal(got, images) and got_names == names
    assert omniglot_source._read_cache(path, 'other-source') is None
    data = bytearray(open(path, 'rb').read())
    data[len(data) // 2] ^= 0xFF  # flip a byte inside the images
    open(path, 'wb').write(bytes(data))
    assert omniglot_source._read_cache(path, 'key1') is None


def test_a_run_reads_the_cache_once(tmp_path, monkeypatch, omniglot_dir):
    """Its training, validation and tuning samplers share one load (and hash) of the decoded array."""
    import protonet
    reads, read = [], omniglot_source._read_or_decode
    monkeypatch.setattr(omniglot_source, '_LOADED', {})
    monkeypatch.setattr(omniglot_source, '_read_or_decode', lambda *args: reads.append(args) or read(*args))
    protonet.main(['--data_dir', omniglot_dir, '--num_train_iterations', '1', '--num_val_tasks', '2',
                   '--batch_size', '2', '--log_dir', str(tmp_path / 'logs')])
    assert len(reads) == 1


def test_read_only_data_dir_puts_cache_in_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    read_only = tmp_path / 'ro'
    read_only.mkdir()
    read_only.chmod(0o555)
    assert omniglot_source.cache_path(str(read_only)).startswith(str(tmp_path / 'xdg'))
    assert omniglot_source.cache_path(str(tmp_path)) == str(tmp_path / 'omniglot28.cache.npz')


def test_missing_data_without_download_says_where_to_put_it(tmp_path):
    with pytest.raises(UserError, match=f'no Omniglot data in {tmp_path}'):
        omniglot_source.load_omniglot(str(tmp_path), download=False)


def test_offline_download_is_a_clear_error_and_leaves_no_file(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError('no network')
    monkeypatch.setattr(urllib.request, 'urlopen', offline)
    with pytest.raises(UserError, match='could not download Omniglot.*put omniglot_resized/'):
        omniglot_source.load_omniglot(str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_download_with_wrong_md5_is_rejected_and_removed(tmp_path, monkeypatch):
    class FakeResponse:
        headers = {'Content-Length': '11'}

        def __init__(self):
            self.chunks = [b'not the zip', b'']

        def read(self, size):
            return self.chunks.pop(0)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, 'urlopen', lambda *a, **k: FakeResponse())
    with pytest.raises(UserError, match='md5 mismatch'):
        omniglot_source.download_official(str(tmp_path))
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------ real data

def test_real_omniglot_loads_with_course_values(omniglot_dir):
    images, names = omniglot_source.load_omniglot(omniglot_dir)
    assert images.shape == (1623, 20, 28, 28) and images.dtype == np.uint8
    assert set(np.unique(images)) == {0, 1}
    ink = images.mean()
    assert 0.03 < ink < 0.2  # strokes are the minority: ink = 1, background = 0
    assert names[0] == 'Alphabet_of_the_Magi/character01' and len(set(names)) == 1623
    batch = omniglot_dataset.omniglot_sampler('train', 5, 5, 15, omniglot_dir, seed=0).sample(2)
    assert batch.images_support.min() == 0 and batch.images_support.max() == 1


@pytest.mark.slow
def test_official_zips_resize_to_the_course_images(omniglot_dir):
    zips = [os.path.join(omniglot_dir, name) for name in omniglot_source.OFFICIAL_ZIPS]
    if not all(os.path.isfile(z) for z in zips):
        pytest.skip('the official zips are not in the data folder')
    resized, names = omniglot_source.load_omniglot(omniglot_dir)
    official, official_names = omniglot_source.decode_source('official_zips', zips)
    assert official_names == names
    assert np.array_equal(official, resized)


def test_corrupt_source_is_a_clear_error(tmp_path):
    (tmp_path / 'omniglot_resized.zip').write_bytes(b'PK\x03\x04 this is not a zip')
    with pytest.raises(UserError, match='omniglot_resized.zip is unreadable'):
        omniglot_source.load_omniglot(str(tmp_path))


# ------------------------------------------------------------ the papers' class splits

def published_vinyals(split):
    """The classes of the published Vinyals et al. lists: {('alphabet/character', degrees)}."""
    path = os.path.join(conftest.real_data('omniglot'), 'splits', 'vinyals', f'{split}.txt')
    classes = set()
    for line in open(path).read().split():
        alphabet, character, rotation = line.split('/')
        classes.add((f'{alphabet}/{character}', int(rotation[3:])))
    return classes


def project_classes(names, class_split, split):
    """The (character, degrees) classes of a split as omniglot_split orders them: class 4c + r."""
    return [(names[c], 90 * r) for c in omniglot_dataset.split_indices(class_split, names)[split] for r in range(4)]


@pytest.mark.parametrize('split', ['train', 'val', 'test'])
def test_vinyals_split_equals_the_published_lists(omniglot_dir, split):
    _, names = omniglot_source.load_omniglot(omniglot_dir)
    ours = project_classes(names, 'vinyals', split)
    assert len(ours) == len(set(ours)) == {'train': 4112, 'val': 688, 'test': 1692}[split]
    assert set(ours) == published_vinyals(split)
    trainval = published_vinyals('trainval')
    assert set(project_classes(names, 'vinyals', 'train')) | set(project_classes(names, 'vinyals', 'val')) == trainval


def test_vinyals_trainval_trains_on_the_published_trainval_and_tests_the_same_classes(omniglot_dir):
    _, names = omniglot_source.load_omniglot(omniglot_dir)
    assert set(project_classes(names, 'vinyals_trainval', 'train')) == published_vinyals('trainval')
    for split in ('val', 'test'):
        assert project_classes(names, 'vinyals_trainval', split) == project_classes(names, 'vinyals', split)


def test_lake_split_is_background_against_evaluation(omniglot_dir):
    _, names = omniglot_source.load_omniglot(omniglot_dir)
    splits = omniglot_dataset.split_indices('lake', names)
    assert [len(splits[s]) for s in ('train', 'val', 'test')] == [792, 172, 659]
    alphabets = {s: {names[i].split('/')[0] for i in splits[s]} for s in splits}
    assert alphabets['train'] | alphabets['val'] == set(omniglot_dataset.BACKGROUND_ALPHABETS)
    assert len(alphabets['test']) == 20 and not alphabets['test'] & set(omniglot_dataset.BACKGROUND_ALPHABETS)
    assert alphabets['val'] == set(omniglot_dataset.VALIDATION_ALPHABETS)
    assert np.array_equal(np.sort(np.concatenate(list(splits.values()))), np.arange(1623))


def test_test_uses_the_checkpoints_class_split(omniglot_dir, tmp_path, monkeypatch, capsys):
    import protonet
    flags = ['--data_dir', omniglot_dir, '--log_dir', str(tmp_path), '--num_hidden_channels', '4', '--batch_size', '2',
             '--num_val_tasks', '2', '--num_query', '2']
    protonet.main(['--split', 'lake', '--num_train_iterations', '1', *flags])
    assert {f.dest for f in registry.dataset('omniglot').flags if f.at_test == TASKS} == {
        'class_split', 'image_size', 'augment_rotations'}
    seen = []
    real = omniglot_dataset.split_indices
    monkeypatch.setattr(omniglot_dataset, 'split_indices', lambda class_split, names=None: seen.append(class_split) or
                        real(class_split, names))
    protonet.main(['--test', '--num_test_tasks', '2', *flags])  # no --split: the checkpoint's
    assert seen == ['lake'] and 'Accuracy over 2 test tasks' in capsys.readouterr().out


@pytest.mark.parametrize('split, classes', [('vinyals', 4 * 423), ('lake', 659)])
def test_test_draws_the_trained_tasks(omniglot_dir, tmp_path, capsys, split, classes):
    """A rotation-trained run tests on the rotated test classes (Vinyals et al.'s 1692; Lake's test stays
    upright), at the trained way, shot and queries unless given."""
    import protonet
    flags = ['--data_dir', omniglot_dir, '--log_dir', str(tmp_path), '--num_hidden_channels', '4', '--batch_size', '2',
             '--num_val_tasks', '2']
    protonet.main(['--split', split, '--augment_rotations', '--num_way', '3', '--num_support', '2', '--num_query', '4',
                   '--num_train_iterations', '1', *flags])
    capsys.readouterr()
    protonet.main(['--test', '--num_test_tasks', '2', *flags])  # no task flags: the trained ones
    where = f'the Omniglot test split ({split}): {classes} classes'
    assert f'testing on 2 3-way 2-shot tasks (4 queries a class) from {where}' in capsys.readouterr().out
    protonet.main(['--test', '--num_test_tasks', '2', '--num_way', '5', '--num_support', '1', '--num_query', '3',
                   '--csv', str(tmp_path / 'test.csv'), *flags])
    assert f'testing on 2 5-way 1-shot tasks (3 queries a class) from {where}' in capsys.readouterr().out
    with open(tmp_path / 'test.csv') as f:
        row = next(csv.DictReader(f))
    assert (row['num_way'], row['num_support'], row['num_query'], row['tasks_from']) == ('5', '1', '3', where)


@pytest.mark.parametrize('init', ['ones', 'uniform'])
def test_batch_norm_weights_start_at_one_or_uniform_on_0_1(init):
    args = type('A', (), {'num_hidden_channels': 64, 'image_size': 28, 'batch_norm_init': init})
    torch.manual_seed(0)
    params, _ = omniglot_dataset.Omniglot().network(args)
    for i in range(4):
        weight = params[f'bn{i}_weight']
        if init == 'ones':
            assert torch.equal(weight, torch.ones(64))
        else:  # 64 draws of U(0, 1): mean 0.5 and std 0.29, give or take about 0.04
            assert 0 <= weight.min() and weight.max() < 1 and 0.35 < weight.mean() < 0.65 and weight.std() > 0.2
        assert torch.equal(params[f'bn{i}_bias'], torch.zeros(64))
