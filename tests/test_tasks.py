"""The generic task sampler, the task batch layout and the DataLoader-style iterator."""
import pytest
import torch

from fewshot.errors import UserError
from fewshot import tasks
import omniglot


def id_examples(num_classes, num_drawings):
    """(C, D, 1, 2, 2) examples whose every pixel is class * D + drawing."""
    ids = torch.arange(num_classes * num_drawings, dtype=torch.int32).view(num_classes, num_drawings)
    return ids.view(num_classes, num_drawings, 1, 1, 1).expand(-1, -1, 1, 2, 2).contiguous()


def example_ids(images):
    return images[..., 0, 0, 0].long()  # (B, M)


def test_task_shapes_and_label_layout():
    sampler = tasks.TaskSampler(id_examples(30, 20), num_way=5, num_support=3, num_query=4, seed=0)
    batch = sampler.sample(6)
    assert batch.images_support.shape == (6, 15, 1, 2, 2)
    assert batch.images_query.shape == (6, 20, 1, 2, 2)
    assert batch.images_support.dtype == torch.float32
    assert torch.equal(batch.labels_support[2], torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]))
    assert torch.equal(batch.labels_query[5], torch.arange(5).repeat_interleave(4))
    assert len(batch) == 6 and len(list(batch)) == 6  # course-style iteration over tasks


def test_classes_distinct_and_support_query_disjoint():
    num_drawings = 20
    sampler = tasks.TaskSampler(id_examples(12, num_drawings), num_way=5, num_support=5, num_query=15, seed=3)
    batch = sampler.sample(32)
    support, query = example_ids(batch.images_support), example_ids(batch.images_query)
    for task in range(32):
        support_class = support[task] // num_drawings
        query_class = query[task] // num_drawings
        # each label is one class, the same in support and query, and classes differ between labels
        for label in range(5):
            assert support_class[batch.labels_support[task] == label].unique().numel() == 1
            assert torch.equal(query_class[batch.labels_query[task] == label].unique(),
                               support_class[batch.labels_support[task] == label].unique())
        assert support_class.unique().numel() == 5
        drawn = torch.cat([support[task], query[task]])
        assert drawn.unique().numel() == drawn.numel()  # no drawing twice: support and query disjoint


def test_classes_come_in_random_order():
    sampler = tasks.TaskSampler(id_examples(5, 20), num_way=5, num_support=1, num_query=1, seed=0)
    first = example_ids(sampler.sample(50).images_support) // 20  # (50, 5) class of label 0..4
    assert len({tuple(row.tolist()) for row in first}) > 10


def test_same_seed_same_tasks():
    examples = id_examples(40, 20)
    a = tasks.TaskSampler(examples, 5, 2, 3, seed=7).sample(8)
    b = tasks.TaskSampler(examples, 5, 2, 3, seed=7).sample(8)
    c = tasks.TaskSampler(examples, 5, 2, 3, seed=8).sample(8)
    assert torch.equal(a.images_support, b.images_support) and torch.equal(a.images_query, b.images_query)
    assert not torch.equal(a.images_support, c.images_support)


@pytest.mark.parametrize('way,support,query,message', [
    (5, 10, 11, r'--num_support 10 \+ --num_query 11 = 21 exceeds the 20'),
    (31, 1, 1, '--num_way 31 exceeds the 30 classes'),
    (5, 0, 1, 'at least 1'),
])
def test_bad_task_shapes_are_clear_errors(way, support, query, message):
    with pytest.raises(UserError, match=message):
        tasks.TaskSampler(id_examples(30, 20), way, support, query)


def test_dataloader_yields_the_asked_number_of_tasks():
    loader = omniglot.TaskLoader(tasks.TaskSampler(id_examples(10, 20), 3, 1, 1), batch_size=4, num_tasks=10)
    assert [len(b) for b in loader] == [4, 4, 2] and len(loader) == 3


def test_task_kinds_score_as_defined():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 3, generator=generator, dtype=torch.float64)
    labels = torch.randint(3, (2, 6), generator=generator)
    nll = [-torch.log_softmax(logits[b, m], 0)[labels[b, m]] for b in range(2) for m in range(6)]
    assert tasks.CLASSIFICATION.loss(logits, labels).item() == pytest.approx(torch.stack(nll).mean().item(), rel=1e-12)
    correct = [[int(logits[b, m].argmax() == labels[b, m]) for m in range(6)] for b in range(2)]
    assert tasks.CLASSIFICATION.metric(logits, labels).tolist() == pytest.approx([sum(c) / 6 for c in correct])
    outputs = torch.randn(2, 5, 1, generator=generator, dtype=torch.float64)
    targets = torch.randn(2, 5, 1, generator=generator, dtype=torch.float64)
    squared = (outputs - targets) ** 2
    assert tasks.REGRESSION.loss(outputs, targets).item() == pytest.approx(squared.mean().item(), rel=1e-12)
    assert tasks.REGRESSION.metric(outputs, targets).tolist() == pytest.approx([squared[b].mean().item() for b in (0, 1)])
    assert (tasks.CLASSIFICATION.metric_kind, tasks.REGRESSION.metric_kind) == ('accuracy', 'loss')
