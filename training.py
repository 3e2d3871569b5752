"""The loop every algorithm shares: command-line flags, training with
TensorBoard logging, validation and atomic checkpoints, exact resume, and
testing with a 95% confidence interval.

An algorithm plugs in as a *learner* with:
    train_step(task_batch, step) -> dict of floats (one meta-update; has 'loss')
    evaluate(task_batch) -> dict of (B,) tensors, one value per task (no update)
    state() / load_state(state) -> everything to checkpoint (model, optimizer, ...)
    extra_scalars() -> dict tag -> float, logged with the training metrics
    key_metric: the validation metric that picks the best checkpoint (higher is better)
    metric_kind: 'accuracy' or 'loss', the word in the TensorBoard tags
"""
import argparse
import glob
import os
import re

import numpy as np
import torch

import util

LOG_INTERVAL = 10
VAL_INTERVAL = 50
SAVE_INTERVAL = 100
VAL_SEED = 1  # validation tasks are the same at every validation, in every run
# flags that may change between a run and its resumption
RESUME_MAY_CHANGE = {'checkpoint_step', 'test', 'device', 'num_workers', 'log_dir', 'data_dir',
                     'datadir', 'num_train_iterations', 'num_test_tasks', 'vmap_tasks', 'csv'}
# flags whose command-line value, when given, replaces the trained one at --test
TEST_TIME_FLAGS = ('num_inner_steps', 'vmap_tasks')


def add_common_args(parser, num_train_iterations, batch_size=16, num_way=5, num_support=1, num_query=15,
                    num_val_tasks=64):
    """The course's flags shared by every algorithm, with this script's defaults."""
    parser.add_argument('--log_dir', type=str, default=None, help='directory for logs and checkpoints')
    parser.add_argument('--num_way', type=int, default=num_way, help='classes per task (N)')
    parser.add_argument('--num_support', type=int, nargs='+', default=[num_support],
                        help='support examples per class (K); with --test, several values sweep K')
    parser.add_argument('--num_query', type=int, default=num_query, help='query examples per class (Q)')
    parser.add_argument('--batch_size', type=int, default=batch_size, help='tasks per meta-batch (B)')
    parser.add_argument('--num_train_iterations', type=int, default=num_train_iterations,
                        help='meta-updates in the whole run')
    parser.add_argument('--test', default=False, action='store_true', help='test a checkpoint instead of training')
    parser.add_argument('--checkpoint_step', type=int, default=-1,
                        help='checkpoint to resume from or test; -1: train from scratch, or test the best')
    parser.add_argument('--num_test_tasks', type=int, default=600, help='tasks evaluated by --test')
    parser.add_argument('--csv', type=str, default=None, help='with --test: also append the results to this CSV file')
    parser.add_argument('--num_val_tasks', type=int, default=num_val_tasks, help='tasks at each validation')
    parser.add_argument('--device', type=str, default='cpu', help='cpu, gpu (CUDA, else MPS), cuda, mps or auto')
    parser.add_argument('--num_workers', type=int, default=2, help='accepted for compatibility; unused')
    parser.add_argument('--seed', type=int, default=0, help='seeds initialisation and task sampling')


def parse_checked(parser, argv=None):
    """parser.parse_args, then check_common_args."""
    args = parser.parse_args(argv)
    check_common_args(args)
    return args


def check_common_args(args):
    """Validate the shared flags; --num_support becomes one int, its values (a K sweep) args.support_sweep."""
    sweep = args.num_support if isinstance(args.num_support, list) else [args.num_support]
    sweep = getattr(args, 'support_sweep', None) or sweep  # already checked
    if len(sweep) > 1 and not args.test:
        raise util.UserError('--num_support takes several values only with --test (a sweep over K); give one to train')
    args.num_support, args.support_sweep = sweep[0], sweep
    if min(sweep) < 1:
        raise util.UserError('--num_support must be at least 1')
    for flag in ('num_way', 'num_support', 'num_query', 'batch_size', 'num_test_tasks', 'num_val_tasks'):
        if getattr(args, flag) < 1:
            raise util.UserError(f'--{flag} must be at least 1')
    if args.num_train_iterations < 1:
        raise util.UserError('--num_train_iterations must be at least 1')


def checkpoint_path(log_dir, step):
    return os.path.join(log_dir, f'state{step}.pt')


def saved_steps(log_dir):
    """Steps of the checkpoints in log_dir, ascending."""
    steps = [re.fullmatch(r'state(\d+)\.pt', os.path.basename(p)) for p in glob.glob(os.path.join(log_dir, 'state*.pt'))]
    return sorted(int(m.group(1)) for m in steps if m)


def best_checkpoint_step(log_dir):
    """The saved step with the best validation key metric, highest accuracy or lowest
    loss (latest among ties)."""
    steps = saved_steps(log_dir)
    if not steps:
        raise util.UserError(f'no checkpoints (state*.pt) in {log_dir}; train first or pass the right --log_dir')
    scores = []
    for step in steps:
        checkpoint = util.load_checkpoint(checkpoint_path(log_dir, step))
        sign = -1 if checkpoint.get('metric_kind') == 'loss' else 1
        scores.append((sign * checkpoint.get('val_score', sign * -np.inf), step))
    return max(scores)[1]


def save_checkpoint(log_dir, step, learner, generator, args, val_score):
    util.atomic_save({'step': step, 'learner': learner.state(), 'rng': util.rng_state(generator),
                      'args': vars(args), 'val_score': val_score, 'metric_kind': learner.metric_kind},
                     checkpoint_path(log_dir, step))


def resume(log_dir, step, learner, generator, args):
    """Load state{step}.pt into learner and generator; return the next step to run."""
    checkpoint = util.load_checkpoint(checkpoint_path(log_dir, step))
    changed = sorted(k for k, v in checkpoint['args'].items()
                     if k not in RESUME_MAY_CHANGE and getattr(args, k, v) != v)
    if changed:
        flags = ', '.join(f'--{k} {checkpoint["args"][k]} (now {getattr(args, k)})' for k in changed)
        raise util.UserError(f'resuming {checkpoint_path(log_dir, step)} with other settings: {flags}; '
                             'pass the values it was trained with')
    learner.load_state(checkpoint['learner'])
    util.set_rng_state(checkpoint['rng'], generator)
    return step + 1


def evaluate_tasks(learner, sampler, num_tasks, batch_size):
    """Per-task metrics over num_tasks tasks: dict name -> (num_tasks,) numpy array."""
    results = {}
    for start in range(0, num_tasks, batch_size):
        metrics = learner.evaluate(sampler.sample(min(batch_size, num_tasks - start)))
        for name, values in metrics.items():
            results.setdefault(name, []).append(values.detach().cpu().numpy())
    return {name: np.concatenate(chunks) for name, chunks in results.items()}


def validate(learner, sampler, args):
    """Mean metrics over the fixed validation tasks, and 'ci95': the 95% CI half-width of the key metric."""
    sampler.generator.manual_seed(VAL_SEED)
    per_task = evaluate_tasks(learner, sampler, args.num_val_tasks, args.batch_size)
    metrics = {name: float(values.mean()) for name, values in per_task.items()}
    metrics['ci95'] = float(util.mean_ci95(per_task[learner.key_metric])[1])
    return metrics


def log_scalars(writer, split, metrics, kind, step):
    for name, value in metrics.items():
        tag = f'loss/{split}' if name == 'loss' else f'{split}_{kind}/{name}'
        writer.add_scalar(tag, value, step)


def train(learner, train_sampler, val_sampler, args, log_dir, start_step=0):
    """Meta-train from start_step to args.num_train_iterations - 1, logging and checkpointing."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm
    writer = SummaryWriter(log_dir=log_dir)
    last = args.num_train_iterations - 1
    val_metrics = {}
    progress = tqdm(range(start_step, args.num_train_iterations), initial=start_step,
                    total=args.num_train_iterations, dynamic_ncols=True)
    for step in progress:
        metrics = learner.train_step(train_sampler.sample(args.batch_size), step)
        if step % LOG_INTERVAL == 0:
            log_scalars(writer, 'train', metrics, learner.metric_kind, step)
            for tag, value in learner.extra_scalars().items():
                writer.add_scalar(tag, value, step)
        if step % VAL_INTERVAL == 0 or step == last:
            val_metrics = validate(learner, val_sampler, args)
            log_scalars(writer, 'val', val_metrics, learner.metric_kind, step)
            writer.flush()
        if step % SAVE_INTERVAL == 0 or step == last:
            save_checkpoint(log_dir, step, learner, train_sampler.generator, args, val_metrics[learner.key_metric])
        progress.set_postfix({'loss': f'{metrics["loss"]:.3f}',
                              **{f'val_{k}': f'{v:.3f}' for k, v in val_metrics.items() if k == learner.key_metric}})
    writer.close()
    progress.close()
    if val_metrics:
        print(f'validation {learner.metric_kind} ({learner.key_metric}) at step {last} over {args.num_val_tasks} tasks: '
              f'mean {val_metrics[learner.key_metric]:.3f}, 95% confidence interval {val_metrics["ci95"]:.3f}')


def test(learner, test_sampler, args):
    """Evaluate args.num_test_tasks test tasks and print the key metric's mean and 95% CI."""
    metrics = evaluate_tasks(learner, test_sampler, args.num_test_tasks, args.batch_size)
    mean, ci95 = util.mean_ci95(metrics[learner.key_metric])
    word = learner.metric_kind.capitalize()
    print(f'{word} over {args.num_test_tasks} test tasks: mean {mean:.3f}, 95% confidence interval {ci95:.3f}')
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


def evaluate_support_sweep(learner, build_sampler, args, device):
    """test() once per K in args.support_sweep (one line each; prefixed by K for a sweep).
    Returns (mean, ci95) of the last K, or a list of them for a sweep."""
    results = []
    for num_support in args.support_sweep:
        args.num_support = num_support
        if len(args.support_sweep) > 1:
            print(f'num_support {num_support}: ', end='')
        util.seed_everything(args.seed)
        mean, ci95 = test(learner, build_sampler('test', args, args.seed, device), args)
        results.append((mean, ci95))
        if getattr(args, 'csv', None):
            append_csv(args.csv, {'log_dir': args.log_dir, 'checkpoint_step': args.tested_step,
                                  'num_way': args.num_way, 'num_support': num_support, 'num_query': args.num_query,
                                  'num_test_tasks': args.num_test_tasks, 'metric': learner.key_metric,
                                  'mean': f'{mean:.6f}', 'ci95': f'{ci95:.6f}'})
    return results if len(results) > 1 else results[0]


def run(args, log_dir, build_learner, build_sampler, after_test=None):
    """Train or test as the flags say.

    build_learner(train_args, device) -> learner; build_sampler(split, args,
    seed, device) -> a sampler with .sample(batch_size) and .generator;
    after_test(learner, args, log_dir), if given, runs after --test (e.g. a figure).
    At test time the learner is rebuilt from the flags it was trained with (a flag
    newer than the checkpoint takes its command-line value).
    """
    check_common_args(args)
    device = util.resolve_device(args.device)
    if device.type == 'cpu':
        util.tune_cpu_allocator()
    if args.test:
        step = args.checkpoint_step if args.checkpoint_step >= 0 else best_checkpoint_step(log_dir)
        args.log_dir, args.tested_step = log_dir, step
        checkpoint = util.load_checkpoint(checkpoint_path(log_dir, step))
        trained_args = argparse.Namespace(**{**vars(args), **checkpoint['args']})  # newer flags: as given
        for flag in TEST_TIME_FLAGS:
            if getattr(args, flag, None) is not None:
                setattr(trained_args, flag, getattr(args, flag))
        learner = build_learner(trained_args, device)
        learner.load_state(checkpoint['learner'])
        if args.checkpoint_step < 0:
            print(f'testing checkpoint step {step}, the best validation {learner.key_metric} '
                  f'({checkpoint["val_score"]:.4f}) in {log_dir}')
        results = evaluate_support_sweep(learner, build_sampler, args, device)
        if after_test is not None:
            after_test(learner, args, log_dir)
        return results
    util.seed_everything(args.seed)
    learner = build_learner(args, device)
    train_sampler = build_sampler('train', args, args.seed, device)
    val_sampler = build_sampler('val', args, VAL_SEED, device)
    start = 0
    if args.checkpoint_step >= 0:
        start = resume(log_dir, args.checkpoint_step, learner, train_sampler.generator, args)
    print(f'logging to {log_dir}')
    train(learner, train_sampler, val_sampler, args, log_dir, start)
