"""The course's Omniglot API: an iterable of task batches, as the homework's starter code
takes them. Not a program: the data path lives in fewshot/datasets/omniglot/.

    from omniglot import get_omniglot_dataloader
    for task_batch in get_omniglot_dataloader('train', 16, 5, 1, 15, 1600, data_dir='./data'):
        for images_support, labels_support, images_query, labels_query in task_batch: ...
"""
import sys

from fewshot import files
from fewshot.datasets.omniglot.dataset import omniglot_sampler


class TaskLoader:
    """Yields ceil(num_tasks / batch_size) TaskBatches from a sampler, like a DataLoader."""

    def __init__(self, sampler, batch_size, num_tasks):
        self.sampler, self.batch_size, self.num_tasks = sampler, batch_size, num_tasks

    def __len__(self):
        return -(-self.num_tasks // self.batch_size)

    def __iter__(self):
        for start in range(0, self.num_tasks, self.batch_size):
            yield self.sampler.sample(min(self.batch_size, self.num_tasks - start))


def get_omniglot_dataloader(split, batch_size, num_way, num_support, num_query, num_tasks_per_epoch,
                            num_workers=None, data_dir=files.DATA_DIR, seed=0, device='cpu', augment_rotations=False):
    """The course's entry point: an iterable of task batches (num_workers is ignored: the tasks
    are drawn from an in-memory array)."""
    sampler = omniglot_sampler(split, num_way, num_support, num_query, data_dir, seed, device, augment_rotations)
    return TaskLoader(sampler, batch_size, num_tasks_per_epoch)


if __name__ == '__main__':
    sys.exit('omniglot.py is the course\'s importable API, not a program; train with protonet.py or maml.py')
