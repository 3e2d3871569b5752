"""Evaluation: per-task metrics over many tasks (shared among processes), validation,
and the test line with its 95% confidence interval, per group of tasks and into a CSV."""
import argparse
import csv
import os

import numpy as np
from tqdm import tqdm

from fewshot import runtime, stats
from fewshot.errors import UserError
from fewshot.engine import distributed

VAL_SEED = 1  # validation tasks are the same at every validation, in every run
TARGET_SEED = 2  # and those that confirm --target_accuracy, others of the same split
GROUP = 'group'
CSV_COLUMNS = ['log_dir', 'checkpoint_step', 'num_way', 'num_support', 'num_query', 'num_test_tasks', 'metric',
               'mean', 'ci95', 'tasks_from']


class Stopped(Exception):
    """An evaluation cut short by a request to stop (a signal): its metrics are not known."""


def evaluate_tasks(learner, sampler, num_tasks, batch_size, processes=distributed.ONE, progress=False,
                   stop=None):
    """Per-task metrics over num_tasks tasks: dict name -> (num_tasks,) numpy array, and
    GROUP -> each task's group when the sampler's tasks have groups (metabolism: the assay).
    Each process evaluates its share of every batch; the shares are gathered in task order.
    progress: show a progress bar (rank 0) on stderr. stop: a function asked before each batch
    (one process only); when it is true, Stopped is raised."""
    results = {}
    bar = tqdm(total=num_tasks, desc='testing', unit='task', leave=False,
               disable=not (progress and processes.is_main))
    for start in range(0, num_tasks, batch_size):
        if stop is not None and stop():
            bar.close()
            raise Stopped
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
        bar.update(len(batch))
    bar.close()
    return {name: np.concatenate(chunks) for name, chunks in results.items()}


def group_results(per_task, key_metric, group_names):
    """{group name: (mean, 95% CI half-width, tasks)} of the key metric over each group's tasks;
    {} when the tasks have no groups."""
    if GROUP not in per_task:
        return {}
    values, groups = per_task[key_metric], per_task[GROUP]
    return {name: (*stats.mean_ci95(values[groups == g]), int((groups == g).sum()))
            for g, name in enumerate(group_names) if (groups == g).any()}


def validate(learner, sampler, args, processes=distributed.ONE, num_tasks=None, seed=VAL_SEED, stop=None):
    """Mean metrics over the fixed validation tasks (num_tasks drawn after seeding with seed;
    None: --num_val_tasks), 'ci95': the 95% CI half-width of the key metric, and the key
    metric's mean per group of tasks (metabolism: per assay). stop: as evaluate_tasks."""
    sampler.generator.manual_seed(seed)
    per_task = evaluate_tasks(learner, sampler, num_tasks or args.num_val_tasks, args.batch_size, processes,
                              stop=stop)
    groups = group_results(per_task, learner.key_metric, sampler.group_names)
    metrics = {name: float(values.mean()) for name, values in per_task.items() if name != GROUP}
    metrics['ci95'] = float(stats.mean_ci95(per_task[learner.key_metric])[1])
    metrics.update({name: float(mean) for name, (mean, _, _) in groups.items()})
    return metrics


def test(learner, test_sampler, num_tasks, batch_size, processes=distributed.ONE):
    """Evaluate num_tasks test tasks and print (rank 0) the key metric's mean and 95% CI."""
    metrics = evaluate_tasks(learner, test_sampler, num_tasks, batch_size, processes, progress=True)
    mean, ci95 = stats.mean_ci95(metrics[learner.key_metric])
    word = learner.task.metric_kind.capitalize()
    if processes.is_main:
        print(f'{word} over {num_tasks} test tasks: mean {mean:.3f}, 95% confidence interval {ci95:.3f}')
        groups = group_results(metrics, learner.key_metric, test_sampler.group_names)
        for name, (group_mean, group_ci95, count) in groups.items():
            print(f'  {name}: mean {group_mean:.3f}, 95% confidence interval {group_ci95:.3f} over {count} tasks')
        if test_sampler.meta_batch_ci:
            print(f"  the course's 95% confidence interval (std of {batch_size}-task meta-batch means / "
                  f"sqrt({num_tasks})): {stats.course_ci95(metrics[learner.key_metric], batch_size):.3f}")
    return mean, ci95


def append_csv(path, row):
    """Append one result row (a dict over CSV_COLUMNS), writing the header to a new file; a failed
    write (a full disk) is one line."""
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    columns = CSV_COLUMNS if new else csv_header(path)  # a file of fewer columns keeps them
    try:
        with open(path, 'a', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction='ignore')
            if new:
                writer.writeheader()
            writer.writerow(row)
    except OSError as error:
        raise UserError(f'could not append to --csv {path} ({error.strerror}); the result line above is the '
                        'test\'s; free space and test again') from None


def csv_header(path):
    with open(path, newline='') as f:
        return next(csv.reader(f), CSV_COLUMNS)


def tasks_line(args, num_support, sampler, task):
    """What a test draws: '600 5-way 1-shot tasks (15 queries a class) from the Omniglot test split
    (vinyals): 1692 classes'; regression: '600 tasks of 5 support and 10 query points from ...'."""
    if task.metric_kind == 'accuracy':
        shape = f'{args.num_way}-way {num_support}-shot tasks ({args.num_query} queries a class)'
    else:
        shape = f'tasks of {num_support} support and {args.num_query} query points'
    return f'{args.num_test_tasks} {shape} from {sampler.description or "the test split"}'


def test_support_sweep(learner, build_sampler, args, processes, log_dir, step):
    """test() once per K of args.support_sweep, each on the tasks a run with only that K
    would draw (one line each; prefixed by K for a sweep); rows appended to --csv.
    Returns (mean, ci95), or a list of them for a sweep."""
    results = []
    for num_support in args.support_sweep:
        runtime.seed_everything(args.seed)
        sampler = build_sampler('test', argparse.Namespace(**{**vars(args), 'num_support': num_support}),
                                args.seed, processes.device)
        if processes.is_main:
            print(f'testing on {tasks_line(args, num_support, sampler, learner.task)}', flush=True)
            if len(args.support_sweep) > 1:
                print(f'num_support {num_support}: ', end='')
        mean, ci95 = test(learner, sampler, args.num_test_tasks, args.batch_size, processes)
        results.append((mean, ci95))
        if args.csv and processes.is_main:
            append_csv(args.csv, {'log_dir': log_dir, 'checkpoint_step': step, 'num_way': args.num_way,
                                  'num_support': num_support, 'num_query': args.num_query,
                                  'num_test_tasks': args.num_test_tasks, 'metric': learner.key_metric,
                                  'mean': f'{mean:.6f}', 'ci95': f'{ci95:.6f}', 'tasks_from': sampler.description})
    return results if len(results) > 1 else results[0]
