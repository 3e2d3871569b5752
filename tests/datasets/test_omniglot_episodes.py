"""Within-alphabet episodes (--episodes within_alphabet): every class of a task from one group, on synthetic and real Omniglot."""
import numpy as np
import pytest
import torch
from fewshot import tasks
from fewshot.datasets.omniglot import dataset as omniglot_dataset
from fewshot.datasets.omniglot import source as omniglot_source
from fewshot.errors import UserError


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
