"""Choose a --split lake ProtoNet's checkpoint on one-shot runs of held-out background alphabets,
then score that checkpoint once on evaluation runs: the protocol of docs/results.md's Lake table.

    python -m tools.lake.select --log_dir L --val_runs val_runs.zip --test_runs eval_runs.zip [--every 200] \
        [--test_flags '--test_views 8']

val_runs / test_runs: zips written by tools.lake.build_runs (background_validation / evaluation).
Prints the validation error rate of every checkpoint scored, then the chosen one's two rates.
"""
import argparse
import contextlib
import io
import os
import re

import numpy as np

import protonet
from fewshot import flags
from fewshot.engine import checkpoints
from fewshot.errors import run_cli

PER_RUN = re.compile(r'^run\d+: error rate ([0-9.]+)%', re.M)


def run_errors(log_dir, step, runs, extra=()):
    """(R,) error rates in % of checkpoint `step` on the runs in the zip `runs`."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        protonet.main(['--test', '--log_dir', log_dir, '--checkpoint_step', str(step), '--lake_runs', runs, *extra])
    return np.array([float(e) for e in PER_RUN.findall(out.getvalue())])


def spread(errors):
    """'mean ± 95% CI over runs' of (R,) error rates in %."""
    return f'{errors.mean():.2f}% ± {1.96 * errors.std(ddof=1) / np.sqrt(len(errors)):.2f}'


def runs_file(text):
    """An argparse type: a runs zip or folder that exists."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f'{text} does not exist; build runs with python -m tools.lake.build_runs, '
                                         "or give Lake's all_runs.zip")
    return text


def trained_log_dir(text):
    """An argparse type: a log dir holding checkpoints."""
    if not checkpoints.saved_steps(text):
        raise argparse.ArgumentTypeError(f'{text} holds no checkpoints; give the --log_dir of a --split lake run')
    return text


def choose_step(log_dir, val_runs, every=100, extra=()):
    """The checkpoint of log_dir (of those at multiples of `every`, and the last) with the lowest mean
    error rate on the runs in val_runs (ties: the later), printing each one's; returns it and
    {step: (R,) error rates in %}."""
    saved = checkpoints.saved_steps(log_dir)
    steps = [s for s in saved if s % every == 0 or s == saved[-1]]
    scored = {}
    for step in steps:
        scored[step] = run_errors(log_dir, step, val_runs, extra)
        print(f'step {step}: validation runs {spread(scored[step])}', flush=True)
    return min(steps, key=lambda s: (scored[s].mean(), -s)), scored


def main(argv=None):
    parser = flags.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--log_dir', required=True, type=trained_log_dir)
    parser.add_argument('--val_runs', required=True, type=runs_file)
    parser.add_argument('--test_runs', required=True, type=runs_file)
    parser.add_argument('--every', type=int, default=100, help='score the checkpoints at multiples of this step')
    parser.add_argument('--test_flags', default='', help="flags for every scoring, e.g. '--test_views 8'")
    args = run_cli(lambda: parser.parse_args(argv))  # a bad flag: one line, exit 2
    best, scored = choose_step(args.log_dir, args.val_runs, args.every, args.test_flags.split())
    test = run_errors(args.log_dir, best, args.test_runs, args.test_flags.split())
    print(f'chosen step {best}: validation runs {spread(scored[best])} ({len(scored[best])} runs), '
          f'evaluation runs {spread(test)} ({len(test)} runs)')


if __name__ == '__main__':
    run_cli(main)
