"""The loop every algorithm shares: the common flags, meta-training with the
optimizer step, TensorBoard logging, validation and checkpoints, exact resume,
and testing with a 95% confidence interval.

A learner (protonet.ProtoNet, maml.MAML, reptile.Reptile) gives the loop:
    parameters() -> the tensors the optimizer trains
    loss(task_batch, step) -> (scalar objective, dict of (B,) per-task metrics)
    evaluate(task_batch) -> dict of (B,) per-task metrics, 'loss' among them (no update)
    state() / load_state(state) -> the model's tensors, for checkpoints
    scalars() -> dict tag -> float, logged with the training metrics
    buffers() -> tensors averaged over the processes after each step (usually [])
    optimizer: 'adam' or 'sgd'; lr_schedule: 'constant', 'cosine' or 'linear' (to 0 over the run);
    lr_tag: the TensorBoard tag of the learning rate, or None
    key_metric: the validation metric that picks the best checkpoint
    task: tasks.CLASSIFICATION or tasks.REGRESSION (its metric_kind names the tags)
The loop owns zero_grad, backward, the learning-rate schedule and the optimizer step.
"""
import argparse
import math
import os

import numpy as np
import torch

import checkpoints
import distributed
import networks
import tuning
import util

LOG_INTERVAL = 10
VAL_INTERVAL = 50
SAVE_INTERVAL = 100
VAL_SEED = 1  # validation tasks are the same at every validation, in every run


def add_common_args(parser):
    """The course's flags shared by every script; cli sets the algorithm's and dataset's defaults."""
    parser.add_argument('--log_dir', type=str, default=None, help='directory for logs and checkpoints')
    parser.add_argument('--data_dir', '--datadir', dest='data_dir', type=str, default='./data',
                        help='folder with the data set (--datadir is the same flag)')
    parser.add_argument('--num_way', type=util.positive_int, default=5, help='classes per task (N)')
    parser.add_argument('--num_support', type=util.positive_int, nargs='+', default=[1],
                        help='support examples per class (K); with --test, several values sweep K')
    parser.add_argument('--num_query', type=util.positive_int, default=15, help='query examples per class (Q)')
    parser.add_argument('--batch_size', type=util.positive_int, default=16, help='tasks per meta-batch (B)')
    parser.add_argument('--learning_rate', '--outer_lr', dest='learning_rate', type=util.positive_float, default=0.001,
                        help='learning rate of the meta-update (--outer_lr is the same flag): Adam for ProtoNet '
                             'and MAML, the initial meta step size for Reptile')
    parser.add_argument('--lr_halving_steps', type=util.non_negative_int, default=0,
                        help='halve the learning rate every this many steps (Snell et al.: 2000); 0: never')
    parser.add_argument('--tasks_per_backward', type=util.non_negative_int, default=None,
                        help='tasks per backward pass within a meta-batch: holds one group\'s graph at a time '
                             '(second-order MAML\'s memory), same gradient; 0: the whole meta-batch at once; '
                             'default: the learner\'s (1 for a per-task MAML loop, else 0)')
    parser.add_argument('--weight_decay', type=util.non_negative_float, default=0.0,
                        help="L2 penalty of the meta-update (the optimizer's weight_decay); 0: none")
    parser.add_argument('--num_train_iterations', type=util.positive_int, default=5000, help='meta-updates in the whole run')
    parser.add_argument('--test', default=False, action='store_true', help='test a checkpoint instead of training')
    parser.add_argument('--checkpoint_step', type=util.checkpoint_step, default=-1,
                        help='checkpoint to resume from or test; -1: train from scratch, or test the best')
    parser.add_argument('--num_test_tasks', type=util.positive_int, default=600, help='tasks evaluated by --test')
    parser.add_argument('--csv', type=str, default=None, help='with --test: also append the results to this CSV file')
    parser.add_argument('--num_val_tasks', type=util.positive_int, default=64, help='tasks at each validation')
    parser.add_argument('--device', type=str, default='cpu', help='cpu, gpu (CUDA, else MPS), cuda, mps or auto')
    parser.add_argument('--num_workers', type=util.non_negative_int, default=2, help='accepted for compatibility; unused')
    parser.add_argument('--seed', type=util.seed, default=0, help='seeds initialisation and task sampling')
    parser.add_argument('--channels_last', choices=['auto', 'yes', 'no'], default='auto',
                        help='give the conv net its images channels-last (same numbers to round-off; Omniglot); '
                             'auto: the faster on this machine, timed once at the start of training and cached '
                             '(at --test and under torchrun: yes on a CPU, no on a GPU)')
    parser.add_argument('--precision', choices=['fp32', 'bf16'], default='fp32',
                        help='bf16: convolutions and matrix products in bfloat16 (torch.autocast), on GPUs and on '
                             'CPUs with AVX512-BF16 or AMX; parameters, optimizer and losses stay float32')


def check_common_args(args):
    """Check the shared flags together, once after parsing (their types checked each one):
    --num_support becomes one int (the first value) and args.support_sweep the list of
    values (a K sweep at --test)."""
    sweep = args.num_support
    if len(sweep) > 1 and not args.test:
        raise util.UserError('--num_support takes several values only with --test (a sweep over K); give one to train')
    args.num_support, args.support_sweep = sweep[0], sweep


# ---------------------------------------------------------------- one meta-update

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


def train_step(learner, optimizer, task_batch, step, learning_rate, total, processes=distributed.ONE,
               tasks_per_backward=0):
    """One meta-update: the schedule's learning rate, zero_grad, the learner's objective on this
    process's share of the tasks with a backward per tasks_per_backward tasks (backward_in_groups),
    the gradients summed over the processes, the optimizer step, buffers averaged. Returns the
    metrics' means over all B tasks as floats, 'loss' among them."""
    for group in optimizer.param_groups:
        group['lr'] = learning_rate_at(learner.lr_schedule, learning_rate, step, total)
    optimizer.zero_grad(set_to_none=True)
    share = task_batch if processes.size == 1 else task_batch.select(processes.share(len(task_batch)))
    objective_sum, metrics = backward_in_groups(learner, share, step, tasks_per_backward, len(task_batch))
    processes.sum_gradients(learner.parameters())
    optimizer.step()
    processes.average(learner.buffers())
    return {'loss': processes.sum(objective_sum), **{k: processes.mean(v) for k, v in metrics.items()}}


# ---------------------------------------------------------------- evaluation

def evaluate_tasks(learner, sampler, num_tasks, batch_size, processes=distributed.ONE):
    """Per-task metrics over num_tasks tasks: dict name -> (num_tasks,) numpy array, and
    GROUP -> each task's group when the sampler's tasks have groups (metabolism: the assay).
    Each process evaluates its share of every batch; the shares are gathered in task order."""
    results = {}
    for start in range(0, num_tasks, batch_size):
        batch = sampler.sample(min(batch_size, num_tasks - start))
        share = processes.share(len(batch))
        empty = share.start == share.stop  # fewer tasks than processes: evaluate one, contribute none
        mine = batch.select(slice(0, 1) if empty else share) if processes.size > 1 else batch
        metrics = learner.evaluate(mine)
        if mine.groups is not None:
            metrics = {**metrics, GROUP: mine.groups}
        for name, values in metrics.items():
            values = values.detach().cpu().numpy()
            results.setdefault(name, []).append(processes.gather(values[:0] if empty else values))
    return {name: np.concatenate(chunks) for name, chunks in results.items()}


GROUP = 'group'


def group_results(per_task, key_metric, group_names):
    """{group name: (mean, 95% CI half-width, tasks)} of the key metric over each group's tasks;
    {} when the tasks have no groups."""
    if GROUP not in per_task:
        return {}
    values, groups = per_task[key_metric], per_task[GROUP]
    return {name: (*util.mean_ci95(values[groups == g]), int((groups == g).sum()))
            for g, name in enumerate(group_names) if (groups == g).any()}


def validate(learner, sampler, args, processes=distributed.ONE):
    """Mean metrics over the fixed validation tasks, 'ci95': the 95% CI half-width of the key
    metric, and the key metric's mean per group of tasks (metabolism: per assay)."""
    sampler.generator.manual_seed(VAL_SEED)
    per_task = evaluate_tasks(learner, sampler, args.num_val_tasks, args.batch_size, processes)
    groups = group_results(per_task, learner.key_metric, getattr(sampler, 'group_names', ()))
    metrics = {name: float(values.mean()) for name, values in per_task.items() if name != GROUP}
    metrics['ci95'] = float(util.mean_ci95(per_task[learner.key_metric])[1])
    metrics.update({name: float(mean) for name, (mean, _, _) in groups.items()})
    return metrics


def log_scalars(writer, split, metrics, kind, step):
    for name, value in metrics.items():
        tag = f'loss/{split}' if name == 'loss' else f'{split}_{kind}/{name}'
        writer.add_scalar(tag, value, step)


def train(learner, optimizer, train_sampler, val_sampler, args, log_dir, start_step=0, processes=distributed.ONE):
    """Meta-train from start_step to args.num_train_iterations - 1, logging and checkpointing (rank 0)."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm
    writer = SummaryWriter(log_dir=log_dir) if processes.is_main else None
    last, kind = args.num_train_iterations - 1, learner.task.metric_kind
    val_metrics = {}
    progress = tqdm(range(start_step, args.num_train_iterations), initial=start_step,
                    total=args.num_train_iterations, dynamic_ncols=True, disable=not processes.is_main)
    per_backward = learner.tasks_per_backward if args.tasks_per_backward is None else args.tasks_per_backward
    for step in progress:
        metrics = train_step(learner, optimizer, train_sampler.sample(args.batch_size), step,
                             halved_learning_rate(args, step), args.num_train_iterations, processes, per_backward)
        if step % distributed.DRIFT_CHECK_INTERVAL == 0:
            processes.check_in_step(learner.parameters(), step)
        if step % VAL_INTERVAL == 0 or step == last:
            val_metrics = validate(learner, val_sampler, args, processes)
        if not processes.is_main:
            continue
        if step % LOG_INTERVAL == 0:
            log_scalars(writer, 'train', metrics, kind, step)
            scalars = learner.scalars()
            if learner.lr_tag:
                scalars[learner.lr_tag] = optimizer.param_groups[0]['lr']
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, step)
        if step % VAL_INTERVAL == 0 or step == last:
            log_scalars(writer, 'val', val_metrics, kind, step)
            writer.flush()
        if step % SAVE_INTERVAL == 0 or step == last:
            checkpoints.save(log_dir, step, learner, optimizer, train_sampler.generator, args,
                             val_metrics[learner.key_metric])
        progress.set_postfix({'loss': f'{metrics["loss"]:.3f}',
                              **{f'val_{k}': f'{v:.3f}' for k, v in val_metrics.items() if k == learner.key_metric}})
    progress.close()
    if processes.is_main:
        writer.close()
        print(f'validation {kind} ({learner.key_metric}) at step {last} over {args.num_val_tasks} tasks: '
              f'mean {val_metrics[learner.key_metric]:.3f}, 95% confidence interval {val_metrics["ci95"]:.3f}')


# ---------------------------------------------------------------- testing

def test(learner, test_sampler, num_tasks, batch_size, processes=distributed.ONE):
    """Evaluate num_tasks test tasks and print (rank 0) the key metric's mean and 95% CI."""
    metrics = evaluate_tasks(learner, test_sampler, num_tasks, batch_size, processes)
    mean, ci95 = util.mean_ci95(metrics[learner.key_metric])
    word = learner.task.metric_kind.capitalize()
    if processes.is_main:
        print(f'{word} over {num_tasks} test tasks: mean {mean:.3f}, 95% confidence interval {ci95:.3f}')
        groups = group_results(metrics, learner.key_metric, getattr(test_sampler, 'group_names', ()))
        for name, (group_mean, group_ci95, count) in groups.items():
            print(f'  {name}: mean {group_mean:.3f}, 95% confidence interval {group_ci95:.3f} over {count} tasks')
        if getattr(test_sampler, 'meta_batch_ci', False):
            print(f"  the course's 95% confidence interval (std of {batch_size}-task meta-batch means / "
                  f"sqrt({num_tasks})): {util.course_ci95(metrics[learner.key_metric], batch_size):.3f}")
    return mean, ci95


CSV_COLUMNS = ['log_dir', 'checkpoint_step', 'num_way', 'num_support', 'num_query', 'num_test_tasks', 'metric',
               'mean', 'ci95']


def append_csv(path, row):
    """Append one result row (a dict over CSV_COLUMNS), writing the header to a new file."""
    import csv
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    with open(path, 'a', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def test_support_sweep(learner, build_sampler, args, processes, log_dir, step):
    """test() once per K of args.support_sweep, each on the tasks a run with only that K
    would draw (one line each; prefixed by K for a sweep); rows appended to --csv.
    Returns (mean, ci95), or a list of them for a sweep."""
    results = []
    for num_support in args.support_sweep:
        if len(args.support_sweep) > 1 and processes.is_main:
            print(f'num_support {num_support}: ', end='')
        util.seed_everything(args.seed)
        sampler = build_sampler('test', argparse.Namespace(**{**vars(args), 'num_support': num_support}),
                                args.seed, processes.device)
        mean, ci95 = test(learner, sampler, args.num_test_tasks, args.batch_size, processes)
        results.append((mean, ci95))
        if args.csv and processes.is_main:
            append_csv(args.csv, {'log_dir': log_dir, 'checkpoint_step': step, 'num_way': args.num_way,
                                  'num_support': num_support, 'num_query': args.num_query,
                                  'num_test_tasks': args.num_test_tasks, 'metric': learner.key_metric,
                                  'mean': f'{mean:.6f}', 'ci95': f'{ci95:.6f}'})
    return results if len(results) > 1 else results[0]


def trained_args(args, checkpoint, test_time_flags):
    """The flags a checkpoint was trained with; flags newer than it take their command-line
    values, and test_time_flags given on the command line replace the trained ones."""
    given = vars(args)
    merged = {**given, **checkpoint['args']}
    merged.update({flag: given[flag] for flag in test_time_flags if given[flag] is not None})
    return argparse.Namespace(**merged)


def run(args, log_dir, build_learner, build_sampler, after_test=None, test_time_flags=(), checkpoint_flags=(),
        benchmark_test=None):
    """Train or test as the (parsed and checked) flags say.

    build_learner(args, device) -> learner; build_sampler(split, args, seed,
    device) -> a sampler with .sample(batch_size) and .generator;
    after_test(learner, args, log_dir), if given, runs after --test (e.g. a figure);
    benchmark_test(learner, test_args, log_dir, processes), if given, may test on a fixed
    benchmark instead of sampled tasks (its results), or return None.
    At test time the learner is rebuilt from the flags it was trained with, and the
    checkpoint_flags (e.g. the class split) of the test tasks are the checkpoint's too.
    """
    processes = distributed.start(util.resolve_device(args.device))
    device = processes.device
    if args.batch_size < processes.size:
        raise util.UserError(f'--batch_size {args.batch_size} is smaller than the {processes.size} processes; '
                             'give each process at least one task')
    if processes.is_main:
        check_outputs(args, log_dir)
    if device.type == 'cpu':
        util.tune_cpu_allocator()
    with util.autocast(device, args.precision):
        return _train_or_test(args, log_dir, build_learner, build_sampler, processes, after_test, test_time_flags,
                              checkpoint_flags, benchmark_test)


def _train_or_test(args, log_dir, build_learner, build_sampler, processes, after_test, test_time_flags,
                   checkpoint_flags, benchmark_test):
    """run() from the device on: test a checkpoint or train (resuming if asked)."""
    device = processes.device
    if args.test:
        step = args.checkpoint_step if args.checkpoint_step >= 0 else checkpoints.best_step(log_dir)
        checkpoint = checkpoints.load(log_dir, step)
        learner = build_learner(trained_args(args, checkpoint, test_time_flags), device)
        learner.load_state(checkpoint['learner'])
        if args.checkpoint_step < 0 and processes.is_main:
            print(f'testing checkpoint step {step}, the best validation {learner.key_metric} '
                  f'({checkpoint["val_score"]:.4f}) in {log_dir}')
        test_args = argparse.Namespace(**{**vars(args), **{flag: checkpoint['args'][flag] for flag in checkpoint_flags
                                                            if flag in checkpoint['args']}})
        results = benchmark_test(learner, test_args, log_dir, processes) if benchmark_test else None
        if results is None:
            results = test_support_sweep(learner, build_sampler, test_args, processes, log_dir, step)
        if after_test is not None and processes.is_main:
            after_test(learner, args, log_dir)
        processes.finish()
        return results
    resumed = None
    if args.checkpoint_step >= 0:  # read and checked before any work
        resumed = checkpoints.load(log_dir, args.checkpoint_step)
        checkpoints.check_settings(resumed, checkpoints.path(log_dir, args.checkpoint_step), args)
    util.seed_everything(args.seed)
    learner = build_learner(args, device)
    optimizer = build_optimizer(learner, args.learning_rate, args.weight_decay)
    train_sampler = build_sampler('train', args, args.seed, device)
    val_sampler = build_sampler('val', args, VAL_SEED, device)
    start = 0 if resumed is None else checkpoints.resume(resumed, learner, optimizer, train_sampler.generator)
    if processes.size == 1:  # the fastest way to compute a step on this machine (the same numbers)
        tuning.choose(learner, lambda: build_sampler('train', args, tuning.TUNE_SEED, device).sample(args.batch_size),
                      args, device)
    if processes.is_main:
        print(f'logging to {log_dir}' + (f' ({processes.size} processes)' if processes.size > 1 else ''))
    train(learner, optimizer, train_sampler, val_sampler, args, log_dir, start, processes)
    processes.finish()


def check_outputs(args, log_dir):
    """--csv and, to train, --log_dir can be written; stray temporaries of killed saves removed."""
    if args.csv:
        util.writable_file(args.csv, '--csv')
    if not args.test:
        util.writable_folder(log_dir, '--log_dir')
        count, size = util.remove_stale_temporaries(log_dir)
        if count:
            print(f'removed {count} temporary checkpoint file(s) ({size / 2 ** 20:.1f} MiB) that runs stopped '
                  f'while saving had left in {log_dir}')
