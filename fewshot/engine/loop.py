"""The training loop every algorithm shares: the optimizer and its schedule, one
meta-update (the engine owns zero_grad, backward, the all-reduce and the step),
and the loop around it with TensorBoard logging, validation and checkpoints."""
import math
import time

import torch
from tqdm import tqdm

from fewshot import networks, runtime
from fewshot.engine import checkpoints, distributed, evaluation

LOG_INTERVAL = 10
SAVE_INTERVAL = 100


def build_optimizer(learner, learning_rate, weight_decay=0.0):
    kind = {'adam': torch.optim.Adam, 'sgd': torch.optim.SGD}[learner.optimizer]
    return kind(learner.parameters(), lr=learning_rate, weight_decay=weight_decay)


def halved_learning_rate(args, step):
    """--learning_rate halved every --lr_halving_steps steps (constant when 0)."""
    return args.learning_rate * 0.5 ** (step // args.lr_halving_steps) if args.lr_halving_steps else args.learning_rate


def learning_rate_at(schedule, base, step, total):
    """The learning rate at a step of a total-step run: constant, cosine to 0, or linear to 0."""
    if schedule == 'cosine':
        return 0.5 * base * (1 + math.cos(math.pi * step / total))
    if schedule == 'linear':
        return base * (1 - step / total)
    return base


def backward_in_groups(learner, tasks, step, tasks_per_backward, total_tasks):
    """learner.loss on tasks, tasks_per_backward at a time (0: all at once), a backward each;
    each group's objective is weighted by its size / total_tasks, so the summed gradient is
    that of one objective over total_tasks tasks while only one group's graph is held.
    Forward passes run in networks.training() (dropout active).
    Returns (the weighted objectives' sum as a float, {name: (len(tasks),) metric})."""
    size = min(tasks_per_backward or len(tasks), len(tasks))
    objective_sum, parts = 0.0, []
    for start in range(0, len(tasks), size):
        group = tasks if size == len(tasks) else tasks.select(slice(start, start + size))
        with networks.training():
            objective, metrics = learner.loss(group, step)
        if len(group) != total_tasks:
            objective = objective * (len(group) / total_tasks)
        objective.backward()
        objective_sum += objective.item()
        parts.append(metrics)
    return objective_sum, {k: torch.cat([part[k] for part in parts]) for k in parts[0]}


class NonFinite(Exception):
    """A meta-update whose loss or gradient is not finite; nothing of it was applied."""

    def __init__(self, step, quantity):
        super().__init__(f'step {step}: the {quantity} is not finite')
        self.step, self.quantity = step, quantity


def train_step(learner, optimizer, task_batch, step, learning_rate, total, processes=distributed.ONE,
               tasks_per_backward=0):
    """One meta-update (meta_update); returns its metrics."""
    return meta_update(learner, optimizer, task_batch, step, learning_rate, total, processes, tasks_per_backward)[0]


def meta_update(learner, optimizer, task_batch, step, learning_rate, total, processes=distributed.ONE,
                tasks_per_backward=0, stop_requested=False):
    """One meta-update: the schedule's learning rate, zero_grad, the learner's objective on this
    process's share of the tasks with a backward per tasks_per_backward tasks (backward_in_groups),
    the gradients summed over the processes (with the stop requests, so that all agree), the
    optimizer step, buffers averaged. Raises NonFinite, before the step, if the loss or a
    gradient is not finite. Returns (the metrics' means over all B tasks as floats, 'loss' among
    them; whether any process asked to stop)."""
    for group in optimizer.param_groups:
        group['lr'] = learning_rate_at(learner.lr_schedule, learning_rate, step, total)
    optimizer.zero_grad(set_to_none=True)
    share = task_batch if processes.size == 1 else task_batch.select(processes.share(len(task_batch)))
    objective_sum, metrics = backward_in_groups(learner, share, step, tasks_per_backward, len(task_batch))
    parameters = learner.parameters()
    stops, bad_losses = processes.sum_gradients(parameters, (float(stop_requested), float(not math.isfinite(
        objective_sum))))
    check_finite(parameters, bad_losses, step)
    optimizer.step()
    processes.average(learner.buffers())
    return {'loss': processes.sum(objective_sum), **{k: processes.mean(v) for k, v in metrics.items()}}, stops > 0


def check_finite(parameters, bad_losses, step):
    """Raise NonFinite naming the loss, or the shape of the first tensor whose gradient is not finite."""
    if bad_losses:
        raise NonFinite(step, 'loss')
    grads = [p.grad for p in parameters if p.grad is not None]
    if grads and not torch.stack([g.isfinite().all() for g in grads]).all():
        bad = next(g for g in grads if not g.isfinite().all())
        raise NonFinite(step, f'gradient of a {tuple(bad.shape)} parameter tensor')


def log_scalars(writer, split, metrics, kind, step):
    for name, value in metrics.items():
        tag = f'loss/{split}' if name == 'loss' else f'{split}_{kind}/{name}'
        writer.add_scalar(tag, value, step)


def train(learner, optimizer, train_sampler, val_sampler, args, log_dir, start_step=0, processes=distributed.ONE,
          interruption=None):
    """Meta-train from start_step to args.num_train_iterations - 1, logging and checkpointing (rank 0).
    When interruption (faults.Interruption) has caught a signal, every process stops after the
    same step, which is saved. Returns that step, or None when the run reached its end.
    Raises NonFinite at the first step whose loss or gradient is not finite, before applying it."""
    from torch.utils.tensorboard import SummaryWriter  # slow to import: only when training
    writer = SummaryWriter(log_dir=log_dir) if processes.is_main else None
    last, kind = args.num_train_iterations - 1, learner.task.metric_kind
    val_metrics = {}
    progress = None  # rank 0's bar, made after the first step: that one warms up and validates, and its
                     # time would make the first ETA many times too long
    per_backward = learner.tasks_per_backward if args.tasks_per_backward is None else args.tasks_per_backward
    reached = False
    # one process may cut a validation short when a signal comes (several must agree, after a step)
    stop_asked = (lambda: bool(interruption.signal)) if interruption and processes.size == 1 else None
    try:
        for step in range(start_step, args.num_train_iterations):
            metrics, stop = meta_update(learner, optimizer, train_sampler.sample(args.batch_size), step,
                                        halved_learning_rate(args, step), args.num_train_iterations, processes,
                                        per_backward, stop_requested=bool(interruption and interruption.signal))
            if step % distributed.DRIFT_CHECK_INTERVAL == 0:
                processes.check_in_step(learner.parameters(), step)
            validates, saves = step % args.val_interval == 0 or step == last, step % SAVE_INTERVAL == 0 or step == last
            if processes.is_main:  # before validating, flushed at the run's first step: no wait for a validation
                log_training(writer, learner, optimizer, step, metrics, flush=step == start_step)
            if validates:
                try:
                    val_metrics = validate_towards_target(learner, val_sampler, args, processes, stop_asked)
                except evaluation.Stopped:  # a signal during validation: save this step unscored, now
                    validates, stop = False, True
            reached = validates and reached_target(args, val_metrics[learner.key_metric])
            if processes.is_main:
                if validates:
                    log_scalars(writer, 'val', val_metrics, kind, step)
                    writer.flush()
                if saves or stop or reached:  # an interrupted step's weights are not validated: no score
                    checkpoints.save(log_dir, step, learner, optimizer, train_sampler.generator, args,
                                     val_metrics[learner.key_metric] if validates else float('nan'))
                if progress is None:
                    progress = tqdm(initial=step + 1, total=args.num_train_iterations, dynamic_ncols=True)
                else:
                    progress.update()
                progress.set_postfix({'loss': f'{metrics["loss"]:.3f}', **{
                    f'val_{k}': f'{v:.3f}' for k, v in val_metrics.items() if k == learner.key_metric}})
            if stop:
                return step
            if reached:
                break
    finally:
        if progress is not None:
            progress.close()
        if writer is not None:
            writer.close()
    if processes.is_main and reached:
        tasks = max(args.target_tasks, args.num_val_tasks)
        print(f'reached validation accuracy {val_metrics[learner.key_metric]:.4f} ({tasks} tasks) at step {step} '
              f'after {time.time() - runtime.process_start_time():.1f} s')
    elif processes.is_main:
        print(f'validation {kind} ({learner.key_metric}) at step {last} over {args.num_val_tasks} tasks: '
              f'mean {val_metrics[learner.key_metric]:.3f}, 95% confidence interval {val_metrics["ci95"]:.3f}')
    return None


def validate_towards_target(learner, val_sampler, args, processes, stop=None):
    """The validation metrics; when they reach --target_accuracy, those of --target_tasks other
    validation tasks instead (a mean over 64 tasks, checked again and again, passes by luck now and
    then), so that every validation before the one that reaches the target scored below it.
    stop: as evaluation.evaluate_tasks (evaluation.Stopped)."""
    metrics = evaluation.validate(learner, val_sampler, args, processes, stop=stop)
    if reached_target(args, metrics[learner.key_metric]) and args.target_tasks > args.num_val_tasks:
        metrics = evaluation.validate(learner, val_sampler, args, processes, args.target_tasks, evaluation.TARGET_SEED,
                                      stop=stop)
    return metrics


def reached_target(args, accuracy):
    """Whether a validation accuracy reaches --target_accuracy (never without one)."""
    return args.target_accuracy is not None and accuracy >= args.target_accuracy


def log_training(writer, learner, optimizer, step, metrics, flush=False):
    """TensorBoard: the training metrics and scalars every LOG_INTERVAL steps."""
    if step % LOG_INTERVAL == 0:
        log_scalars(writer, 'train', metrics, learner.task.metric_kind, step)
        scalars = learner.scalars()
        if learner.lr_tag:
            scalars[learner.lr_tag] = optimizer.param_groups[0]['lr']
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, step)
    if flush:
        writer.flush()
