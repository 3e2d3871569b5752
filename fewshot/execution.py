"""Ways to compute the same numbers faster: the images' memory layout and how many tasks
go through the network per call. The learners offer these ways to engine/tuning.py,
which times them at the start of training; the models themselves do not change.
"""
import torch

from fewshot.flags import auto_yes_no

ALL_TASKS = 1 << 30  # tasks per call above any meta-batch: one batched call


def channels_last(images):
    """(..., C, H, W) images laid out channels-last (C varies fastest in memory); a view when C == 1
    (flattening leading dimensions afterwards can undo it: convert (N, C, H, W) images).

    A conv2d on such an input writes its output channels-last, and batch norm, ReLU and
    max-pool keep the layout, so every block runs channels-last. With one channel,
    .contiguous(memory_format=torch.channels_last) returns the tensor unchanged (its strides
    are ambiguous, read as contiguous) and the convolutions stay in NCHW.
    """
    if images.shape[-3] == 1:
        return images.contiguous().squeeze(-3).unsqueeze(-1).movedim(-1, -3)
    return images.movedim(-3, -1).contiguous().movedim(-1, -3)


def default_channels_last(device):
    """Measured (bench.py --only layout): on a CPU channels-last convolutions and max-pool are faster
    (NCHW max-pool took 4x as long); on a GPU contiguous, the layout that was measured there."""
    return torch.device(device).type == 'cpu'


def default_tasks_per_call(device, num_tasks):
    """Measured (bench.py): on a CPU a per-task loop is faster (its activations stay
    in cache); on a GPU one batched call keeps the device busy."""
    return 1 if torch.device(device).type == 'cpu' else num_tasks


def per_task_calls(network, inputs, tasks_per_call, images_channels_last=False):
    """Run network over a meta-batch in groups of tasks, each task with its own BN statistics.

    Args:
        network: f(x of shape (T*M, ...), num_tasks=T) -> (T*M, D).
        inputs: (B, M, ...) the examples of B tasks.
        tasks_per_call: tasks per call; B (or ALL_TASKS) makes one batched call, 1 a per-task loop.
        images_channels_last: give network (T*M, C, H, W) images channels-last.
    Returns:
        (B, M, D) outputs.
    """
    outputs = []
    for chunk in inputs.split(tasks_per_call):
        examples = chunk.flatten(0, 1)  # after flattening: with one channel, flatten forgets the layout
        if images_channels_last:
            examples = channels_last(examples)
        outputs.append(network(examples, num_tasks=len(chunk)).unflatten(0, (len(chunk), -1)))
    return torch.cat(outputs)


def combine(*choices):
    """The options of independent choices, each {name: switch} ({} when a flag forced it):
    {'name, name': switch to both}; {} when at most one way is left."""
    options = {'': lambda: None}
    for choice in filter(None, choices):
        options = {(f'{first}, {second}' if first else second): (lambda f=f, g=g: (f(), g()))
                   for first, f in options.items() for second, g in choice.items()}
    return options if len(options) > 1 else {}


class ImageLayout:
    """Whether a learner gives its conv net channels-last images: forced (True/False), or None,
    the device's default, with both ways offered to tuning."""

    def __init__(self, channels_last, device):
        self.tunable = channels_last is None
        self.channels_last = default_channels_last(device) if channels_last is None else channels_last

    def options(self):
        """{name: switch} of the two layouts, or {} when a flag forced one."""
        if not self.tunable:
            return {}
        return {'channels-last images': lambda: setattr(self, 'channels_last', True),
                'contiguous images': lambda: setattr(self, 'channels_last', False)}

    def __call__(self, images):
        """(N, C, H, W) images in the chosen layout."""
        return channels_last(images) if self.channels_last else images


class EncoderCalls:
    """How an encoder goes over a meta-batch: tasks_per_call tasks per call (1: per task;
    ALL_TASKS: one batched call), or None: the device's default, with both offered to tuning;
    and the image layout."""

    def __init__(self, tasks_per_call, channels_last, device):
        self.device = torch.device(device)
        self.tasks_per_call, self.tunable = tasks_per_call, tasks_per_call is None
        self.layout = ImageLayout(channels_last, device)

    def options(self, num_tasks=None):
        """{name: switch} of the ways for steps of num_tasks tasks (None: any number); with one task
        a step, per-task and batched calls are the same call, so only the layouts are offered."""
        calls = {'per-task encoder calls': lambda: setattr(self, 'tasks_per_call', 1),
                 'one batched encoder call': lambda: setattr(self, 'tasks_per_call', ALL_TASKS)}
        return combine(calls if self.tunable and num_tasks != 1 else {}, self.layout.options())

    def __call__(self, network, examples):
        """(B, M, ...) examples of B tasks -> (B, M, D) embeddings, batch-norm statistics per task."""
        per_call = self.tasks_per_call or default_tasks_per_call(self.device, len(examples))
        return per_task_calls(network, examples, per_call, self.layout.channels_last)


def library_steps(args):
    """Whether a run takes the library's faster ways to compute its steps (the fastest tuned; a
    meta-batch's tasks at once): with --fast, or a flag that batches MAML's tasks past its
    per-task methods (--vmap_tasks yes, --group_tasks yes). Otherwise the course's methods
    compute every step as they are written, task by task, and an execution flag left at auto
    takes the plain way (per-task encoder calls, contiguous images)."""
    given = vars(args)
    return bool(given.get('fast')) or 'yes' in (given.get('vmap_tasks'), given.get('group_tasks'))


def image_layout_flag(args, dataset):
    """--channels_last as the learners take it: None (auto: timed), True or False; False when the
    dataset's examples are not images."""
    return auto_yes_no(args.channels_last) if dataset.images else False
