"""Larger images (--image_size) made from the 105x105 originals: the network, the checkpoint and the test take them; refusals."""
import io
import zipfile
import numpy as np
import pytest
import torch
from PIL import Image
import protonet
from fewshot.datasets.omniglot import dataset as omniglot_dataset
from fewshot.datasets.omniglot import source as omniglot_source
from fewshot.errors import UserError


@pytest.mark.slow
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
    shape = type('A', (), {'num_hidden_channels': 3, 'image_size': 84, 'batch_norm_init': 'ones'})
    params, forward = omniglot_dataset.Omniglot().network(shape, num_outputs=20)
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
