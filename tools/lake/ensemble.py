"""An ensemble of --split lake ProtoNets on one-shot runs: each test image's class probabilities
(each image on its own, as --test --lake_runs scores them) averaged over the members; members
chosen on the background-validation runs by forward selection, and the chosen ensemble scored
once on the evaluation runs: the protocol of docs/results.md's Lake table.

    python -m tools.lake.ensemble --members L1:S1 L2:S2 ... --val_runs val_runs.zip \
        --test_runs eval_runs.zip [all_runs.zip] [--test_flags '--test_views 8']

Lx:Sx: a model's log dir and checkpoint step (each chosen on the validation runs by
tools.lake.select); one log dir may be named at several steps (checkpoints of one run as
members). Prints each member's validation error rate, the members chosen, and the
ensemble's error rates on the validation runs and (once) on each --test_runs, the latter also in
--test --lake_runs's line (Lake's official all_runs.zip among them is reported alike).
"""
import argparse
import os

import numpy as np
import torch

import protonet
from fewshot import cli, flags, runtime
from fewshot.datasets.omniglot import lake_runs
from fewshot.engine import checkpoints, runner
from fewshot.errors import UserError, run_cli
from tools.lake.select import runs_file, spread


def member_probabilities(log_dir, step, runs, extra=()):
    """(R, N, N) class probabilities of checkpoint `step` of log_dir for each test image of the runs
    in the zip `runs` (at the model's own image size), and (R, N) the test images' classes."""
    argv = ['--test', '--log_dir', log_dir, '--checkpoint_step', str(step), '--lake_runs', runs, *extra]
    command = cli.parse(protonet.PROGRAM, argv, protonet.LEARNERS)
    device = torch.device('cpu')
    with runtime.autocast(device, command.args.precision):
        learner, _, trained = runner.trained_learner(command, step, device)
        tasks_flags = flags.task_args(command, trained)
        lake_runs.check_model(tasks_flags.class_split, learner.num_outputs, log_dir)
        _, batch = lake_runs.read_runs(runs, tasks_flags.image_size)
        return lake_runs.class_probabilities(learner, batch), batch.labels_query.numpy()


def ensemble_errors(probabilities, labels):
    """(R,) error rates in % of the mean of the members' (R, N, N) probabilities against (R, N) labels."""
    predicted = np.mean(probabilities, axis=0).argmax(-1)
    return 100 * (predicted != labels).mean(-1)


def choose_members(probabilities, labels):
    """Forward selection on validation runs: order the members greedily (the best alone, then
    each time the one whose addition gives the lowest mean error rate; ties: the first named),
    and keep the prefix of that order with the lowest mean error rate (ties: the shorter).
    probabilities: {name: (R, N, N)}; returns the chosen names in the order chosen."""
    order, prefix_errors = [], []
    while len(order) < len(probabilities):
        trials = {name: ensemble_errors([probabilities[m] for m in order + [name]], labels).mean()
                  for name in probabilities if name not in order}
        order.append(min(trials, key=trials.get))
        prefix_errors.append(trials[order[-1]])
    return order[:int(np.argmin(prefix_errors)) + 1]


def member(text):
    """'LOG_DIR:STEP' -> (log dir, step); argparse's one-line error otherwise."""
    log_dir, _, step = text.rpartition(':')
    if not log_dir or not step.isdigit():
        raise argparse.ArgumentTypeError(f'{text!r}: name a member as LOG_DIR:STEP, e.g. logs/lake:2900')
    checkpoint = checkpoints.path(log_dir, int(step))
    if not os.path.isfile(checkpoint):
        raise argparse.ArgumentTypeError(f'{text}: no checkpoint at {checkpoint}')
    return log_dir, int(step)


def main(argv=None):
    parser = flags.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--members', nargs='+', required=True, type=member, metavar='LOG_DIR:STEP')
    parser.add_argument('--val_runs', required=True, type=runs_file)
    parser.add_argument('--test_runs', nargs='+', required=True, type=runs_file,
                        help='each scored once by the chosen members')
    parser.add_argument('--test_flags', default='', help="flags for every scoring, e.g. '--test_views 8'")
    args = run_cli(lambda: parser.parse_args(argv))  # a bad flag: one line, exit 2
    try:
        score(args)
    except UserError as error:  # e.g. a member not trained on --split lake
        raise SystemExit(f'error: {error}') from None


def score(args):
    """Choose the members of args.members on args.val_runs and score them on each args.test_runs, printing."""
    members = {f'{log_dir}:{step}': (log_dir, step) for log_dir, step in args.members}  # repeats: once
    val, labels = {}, None
    for name, (log_dir, step) in members.items():
        val[name], labels = member_probabilities(log_dir, step, args.val_runs, args.test_flags.split())
        print(f'{name}: validation runs {spread(ensemble_errors([val[name]], labels))}', flush=True)
    print(f'all {len(members)} members: validation runs {spread(ensemble_errors(list(val.values()), labels))}')
    chosen = choose_members(val, labels)
    print(f'chosen {", ".join(chosen)}: validation runs {spread(ensemble_errors([val[m] for m in chosen], labels))} '
          f'({len(labels)} runs)')
    for runs in args.test_runs:
        test = [member_probabilities(*members[name], runs, args.test_flags.split()) for name in chosen]
        test_errors = ensemble_errors([p for p, _ in test], test[0][1])
        print(f'{runs}: evaluation runs {spread(test_errors)} ({len(test_errors)} runs); '
              f'{lake_runs.summary_line(test_errors / 100)}')


if __name__ == '__main__':
    run_cli(main)
