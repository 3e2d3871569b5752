"""Several processes under torchrun: every process draws the same meta-batch
of B tasks and works on its own contiguous share; the loop weights each share's
objective by its size / B and sums the gradients across processes, so every
process takes the optimizer step the one-process run would take (up to
floating-point round-off). Evaluation is split the same way and the per-task
results are gathered in task order. Rank 0 alone writes files.

Without torchrun's environment (WORLD_SIZE unset or 1) everything here is a
no-op for one process. NCCL on CUDA with one GPU per process (LOCAL_RANK),
gloo on CPUs.
"""
import os
import sys

import numpy as np
import torch
import torch.distributed as dist

from fewshot.errors import UserError

DRIFT_CHECK_INTERVAL = 100  # steps between checks that the processes' parameters agree


class Processes:
    """This process's place among the run's processes: rank, size, device."""

    def __init__(self, rank=0, size=1, device=torch.device('cpu')):
        self.rank, self.size, self.device = rank, size, device
        self.finished_without_teardown = False  # set by finish under gloo: end with leave

    @property
    def is_main(self):
        """Whether this process writes logs, checkpoints and printed lines."""
        return self.rank == 0

    def share(self, num_tasks):
        """This process's contiguous share of num_tasks tasks, as a slice (sizes differ by at most one)."""
        base, extra = divmod(num_tasks, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def sum_gradients(self, tensors, flags=()):
        """Sum the .grad of tensors over the processes, in one flattened all-reduce that also
        sums the numbers in flags (what every process must agree on, such as a request to stop);
        returns the flags' sums."""
        if self.size == 1:
            return tuple(flags)
        grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in tensors]
        flat = torch.cat([g.reshape(-1) for g in grads] + [torch.tensor(flags, dtype=grads[0].dtype,
                                                                         device=grads[0].device).reshape(-1)])
        dist.all_reduce(flat)
        sizes = [g.numel() for g in grads]
        for tensor, chunk in zip(tensors, flat.split([*sizes, len(flags)])):
            tensor.grad = chunk.view_as(tensor).clone()
        return tuple(flat[sum(sizes):].tolist())

    def average(self, tensors):
        """Replace each tensor by its mean over the processes (batch-norm running statistics)."""
        if self.size == 1 or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.size
        with torch.no_grad():
            for tensor, chunk in zip(tensors, flat.split([t.numel() for t in tensors])):
                tensor.copy_(chunk.view_as(tensor))

    def sum(self, value):
        """A float summed over the processes."""
        if self.size == 1:
            return value
        total = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return total.item()

    def mean(self, values):
        """The mean over all tasks of a (share,) tensor of per-task values, as a float."""
        if self.size == 1:
            return values.mean().item()
        return float(self.gather(values.detach().cpu().numpy()).mean())

    def gather(self, values):
        """Per-task values of this process's share -> those of all shares in task order: (n,) -> (N,)."""
        if self.size == 1:
            return values
        local = torch.as_tensor(values, dtype=torch.float64, device=self.device)
        sizes = [torch.zeros(1, dtype=torch.int64, device=self.device) for _ in range(self.size)]
        dist.all_gather(sizes, torch.tensor([len(local)], device=self.device))
        longest = int(max(s.item() for s in sizes))
        padded = torch.zeros(longest, dtype=torch.float64, device=self.device)
        padded[:len(local)] = local
        chunks = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(chunks, padded)
        return np.concatenate([c[:int(s.item())].cpu().numpy() for c, s in zip(chunks, sizes)])

    def finish(self):
        """Wait for every process (rank 0 may still be writing), then leave the process group.

        With gloo, a process that tears its group down as soon as its barrier returns can
        abort another still finishing that barrier (pytorch/gloo#155); so each process
        leaves only once every process has returned from the barrier, counted in the
        rendezvous store, outside gloo. Even then gloo's teardown itself can abort a
        process whose work is done (SIGABRT, "terminate called without an active
        exception": once in CI's suite, after the run had saved everything; rare
        enough that 80 runs here did not repeat it): so a gloo process does not tear
        its group down at all, and `leave` ends it without the interpreter's exit."""
        if self.size > 1 and dist.is_initialized():
            dist.barrier()
            if dist.get_backend() == 'gloo':
                store = dist.distributed_c10d._get_default_store()
                if store.add('finished', 1) == self.size:
                    store.set('all_finished', '1')
                store.wait(['all_finished'])
                self.finished_without_teardown = True
            else:
                dist.destroy_process_group()

    def leave(self, status):
        """End a gloo process that `finish` left in its group with exit status `status` (an int),
        its files closed: output flushed, then os._exit, which runs no C++ destructor and joins
        no gloo thread. Does nothing in any other process."""
        if self.finished_without_teardown:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status if isinstance(status, int) else 1)

    def check_in_step(self, tensors, step):
        """Raise if the processes' parameters have drifted apart (a float64 checksum each)."""
        if self.size == 1:
            return
        checksum = torch.tensor([sum(t.detach().double().sum().item() for t in tensors)], dtype=torch.float64,
                                device=self.device)
        sums = [torch.empty_like(checksum) for _ in range(self.size)]
        dist.all_gather(sums, checksum)
        if len({s.item() for s in sums}) > 1:
            raise RuntimeError(f'at step {step} the processes\' parameters differ (checksums '
                               f'{[s.item() for s in sums]}): a bug in the gradient reduction, please report it')


ONE = Processes()  # the one process of a run without torchrun


def launched_by_torchrun():
    return int(os.environ.get('WORLD_SIZE', '1')) > 1


def start(device):
    """Join torchrun's process group if there is one; returns Processes with this process's device
    (cuda:LOCAL_RANK on CUDA)."""
    if not launched_by_torchrun():
        return Processes(device=device)
    if device.type == 'cuda':
        local_rank = int(os.environ.get('LOCAL_RANK', '0'))
        if local_rank >= torch.cuda.device_count():
            raise UserError(f'{os.environ["WORLD_SIZE"]} processes on this machine but '
                                 f'{torch.cuda.device_count()} GPU(s); lower --nproc_per_node')
        device = torch.device('cuda', local_rank)
        torch.cuda.set_device(device)
    elif device.type != 'cpu':
        raise UserError(f'--device {device.type}: several processes run on CUDA GPUs or CPUs only')
    if not dist.is_initialized():
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    return Processes(dist.get_rank(), dist.get_world_size(), device)
