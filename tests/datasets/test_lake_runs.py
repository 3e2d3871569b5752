"""Lake et al.'s one-shot runs: the builder, the reader, the scoring and the refusals, on runs
built in the official all_runs.zip layout from images_evaluation drawings (the
official zip is not available offline)."""
import contextlib
import os
import re
import shutil
import zipfile

import numpy as np
import pytest
import torch

import maml
import protonet
from fewshot.errors import UserError
from fewshot.datasets.omniglot import source as omniglot_source
from fewshot import files
from fewshot.datasets.omniglot import dataset as omniglot_dataset, lake_runs

NUM_RUNS, NUM_WAY = lake_runs.NUM_RUNS, lake_runs.NUM_WAY


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    import conftest
    data_dir = conftest.real_data('omniglot')
    path = str(tmp_path_factory.mktemp('lake') / 'all_runs.zip')
    built = lake_runs.build_runs(os.path.join(data_dir, 'images_evaluation.zip'), path)
    images, names = omniglot_source.load_omniglot(data_dir)
    return path, built, images, names, data_dir


class PixelNearestNeighbour:
    """A learner double: each test image takes the class of the nearest training image in pixels,
    on its own."""
    key_metric, num_outputs = 'query', None

    @contextlib.contextmanager
    def queries_alone(self):
        yield True

    def parameters(self):
        return [torch.zeros(1)]

    def evaluate(self, batch):
        distances = torch.cdist(batch.images_query.flatten(2), batch.images_support.flatten(2))  # (R, Q, N)
        predicted = batch.labels_support.gather(1, distances.argmin(-1))
        return {'query': (predicted == batch.labels_query).float().mean(1)}


def test_reader_gives_the_cached_drawings_and_the_classes_of_class_labels(runs):
    path, built, images, names, _ = runs
    run_names, batch = lake_runs.read_runs(path)
    assert run_names == [f'run{r:02d}' for r in range(1, NUM_RUNS + 1)]
    assert batch.images_support.shape == batch.images_query.shape == (NUM_RUNS, NUM_WAY, 1, 28, 28)
    for r, (classes, order) in enumerate(built):
        for k, (character, first, second) in enumerate(classes):  # resized exactly as images_evaluation
            assert torch.equal(batch.images_support[r, k, 0], torch.tensor(images[names.index(character), first]).float())
        for m, k in enumerate(order):
            character, _, second = classes[k]
            assert torch.equal(batch.images_query[r, m, 0], torch.tensor(images[names.index(character), second]).float())
        assert batch.labels_query[r].tolist() == order
        assert batch.labels_support[r].tolist() == list(range(NUM_WAY))


def test_extracted_folder_reads_like_the_zip(runs, tmp_path):
    path = runs[0]
    with zipfile.ZipFile(path) as archive:
        archive.extractall(tmp_path / 'all_runs')
    _, from_zip = lake_runs.read_runs(path)
    names, from_folder = lake_runs.read_runs(str(tmp_path / 'all_runs'))
    assert len(names) == NUM_RUNS
    for a, b in zip(vars(from_zip).values(), vars(from_folder).values()):
        assert (a is None and b is None) or torch.equal(a, b)


def test_error_rates_match_an_independent_nearest_neighbour(runs, capsys):
    path, built, images, names, data_dir = runs
    expected = []
    for classes, order in built:
        training = np.stack([images[names.index(c), first] for c, first, _ in classes]).reshape(NUM_WAY, -1)
        wrong = 0
        for k in order:
            character, _, second = classes[k]
            test = images[names.index(character), second].reshape(1, -1).astype(np.int64)
            wrong += int(np.argmin(((training - test) ** 2).sum(1)) != k)
        expected.append(wrong / NUM_WAY)
    args = type('Args', (), {'class_split': 'lake', 'lake_runs': path, 'data_dir': data_dir, 'image_size': 28})
    errors = lake_runs.lake_test(PixelNearestNeighbour(), args, 'D')
    assert np.allclose(errors, expected) and 0 < np.mean(expected) < 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f'run01: error rate {100 * expected[0]:.1f}% ({round(expected[0] * 20)} of 20 wrong)'
    assert out[-1] == (f'Lake one-shot runs: mean error rate {100 * np.mean(expected):.2f}% over 20 runs '
                       f'(accuracy {100 * (1 - np.mean(expected)):.2f}%)')


def test_broken_runs_are_one_line_errors(runs, tmp_path):
    folder = tmp_path / 'all_runs'
    with zipfile.ZipFile(runs[0]) as archive:
        archive.extractall(folder)
    os.remove(folder / 'run03' / 'test' / 'item07.png')
    with pytest.raises(UserError, match=r'run03/test/item07.png, named in run03/class_labels.txt, is missing'):
        lake_runs.read_runs(str(folder))
    shutil.rmtree(folder / 'run03')
    (folder / 'run04' / 'class_labels.txt').write_text('run04/test/item01.png\n')
    with pytest.raises(UserError, match='one "test image, training image" pair per line'):
        lake_runs.read_runs(str(folder))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(UserError, match='holds no runNN/class_labels.txt'):
        lake_runs.read_runs(str(tmp_path / 'empty'))


def tiny_flags(data_dir, log_dir):
    return ['--data_dir', data_dir, '--log_dir', str(log_dir), '--num_hidden_channels', '4', '--batch_size', '2',
            '--num_val_tasks', '2', '--num_query', '2', '--num_train_iterations', '1']


def test_protonet_trained_on_lake_split_scores_the_runs(runs, tmp_path, capsys):
    path, _, _, _, data_dir = runs
    flags = tiny_flags(data_dir, tmp_path)
    protonet.main(['--split', 'lake', *flags])
    capsys.readouterr()
    errors = protonet.main(['--test', '--lake_runs', path, *flags])
    out = capsys.readouterr().out
    rates = [float(x) for x in re.findall(r'run\d\d: error rate ([\d.]+)%', out)]
    assert len(rates) == len(errors) == NUM_RUNS and np.allclose(rates, 100 * errors, atol=0.05)
    mean = float(re.search(r'Lake one-shot runs: mean error rate ([\d.]+)% over 20 runs', out).group(1))
    assert mean == pytest.approx(np.mean(rates), abs=0.006)
    assert 'Accuracy over' not in out  # the runs replace the sampled test tasks


def test_models_that_saw_the_runs_characters_or_lack_20_outputs_are_refused(runs, tmp_path):
    path, _, _, _, data_dir = runs
    course = tiny_flags(data_dir, tmp_path / 'course')
    protonet.main(course)
    with pytest.raises(UserError, match=r'trained on the course split.*train with --split lake'):
        protonet.main(['--test', '--lake_runs', path, *course])
    five_way = tiny_flags(data_dir, tmp_path / 'maml')
    maml.main(['--split', 'lake', *five_way])
    with pytest.raises(UserError, match=r'5-way head; train it with --num_way 20 --split lake'):
        maml.main(['--test', '--lake_runs', path, *five_way])
    with pytest.raises(UserError, match='--lake_runs scores a trained model: add --test'):
        protonet.main(['--lake_runs', path, *course])
    with pytest.raises(UserError, match='--lake_runs nowhere.zip does not exist'):
        protonet.main(['--test', '--lake_runs', 'nowhere.zip', *course])


def test_official_runs_offline_is_one_line_naming_where_to_put_them(tmp_path, monkeypatch):
    def offline(url, target, check):
        assert url == lake_runs.RUNS_URL and target == str(tmp_path / 'all_runs.zip')
        raise OSError('no network')
    monkeypatch.setattr(files, 'download_file', offline)
    with pytest.raises(UserError, match=r"could not download Lake's runs \(no network\); put all_runs.zip in"):
        lake_runs.official_runs(str(tmp_path))
    (tmp_path / 'all_runs.zip').write_bytes(b'')  # present: used as it is, not downloaded
    assert lake_runs.official_runs(str(tmp_path)) == str(tmp_path / 'all_runs.zip')


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
