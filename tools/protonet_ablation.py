"""ProtoNet on Vinyals et al.'s Omniglot split: today's recipe against Snell et al.'s code, one
difference at a time, at a fixed budget, judged on the validation classes alone.

    python -m tools.protonet_ablation --data_dir D/omniglot             # every variant, then the table
    python -m tools.protonet_ablation --data_dir D/omniglot --only joint_batch_norm
    python -m tools.protonet_ablation --data_dir D/omniglot --only recipe batch_norm_uniform_init --seed 1

Each variant trains the papers' first ProtoNet recipe (60-way 1-shot episodes, 5 queries a
class, Adam 1e-3 halved every 2000 episodes, bf16, the 1028 training characters in four
rotations) for EPISODES episodes with its flags changed, and validates 20-way 1-shot on
VAL_TASKS tasks of the validation characters every VAL_INTERVAL. No test class is drawn.
--seed S (default 0) repeats variants with another initialisation and other training
episodes (runs/NAME.seed_S). Runs resume where they stopped; OUT/index.md gets one row per
variant and seed that has run.
"""
import os
import sys

from fewshot.errors import UserError, run_cli
from fewshot.flags import ArgumentParser, HelpWithDefaults, seed as seed_flag
from tools.report_figures import validation_clock
from tools.report_jobs import portable, run_command

EPISODES, VAL_INTERVAL, VAL_TASKS = 3000, 500, 1000
RECIPE = ['--split', 'vinyals', '--augment_rotations', '--num_support', '1', '--train_num_way', '60',
          '--train_num_query', '5', '--num_way', '20', '--num_query', '5', '--batch_size', '1',
          '--lr_halving_steps', '2000', '--precision', 'auto']
# name -> (flags changed from RECIPE, what Snell et al.'s code does that this variant takes)
VARIANTS = {
    'recipe': ([], "today's recipe: the support and the query images normalised apart, each by its own batch "
                   'statistics, in training and evaluation (the course\'s step)'),
    'joint_batch_norm': (['--joint_batch_norm'], "a task's support and query images normalised together, as "
                                                 "their code batches them, in training and evaluation"),
    'running_statistics': (['--running_statistics'], 'running statistics kept while training (momentum 0.1) and '
                                                     'used to evaluate (their model.eval())'),
    'snell_batch_norm': (['--joint_batch_norm', '--running_statistics'],
                         'both: training mode over the concatenated batch, evaluation with running statistics, '
                         'as their code does'),
    'batch_norm_uniform_init': (['--batch_norm_init', 'uniform'], 'batch-norm weights drawn from U(0, 1) at the '
                                                                  "start: PyTorch's default when their code was "
                                                                  'written (before 1.0)'),
    'float32': (['--precision', 'fp32'], 'float32 throughout (their precision) instead of bfloat16'),
    'validation_queries_15': (['--num_query', '15'], '15 queries a class at validation (training unchanged)'),
    'snell_code': (['--joint_batch_norm', '--running_statistics', '--batch_norm_init', 'uniform', '--precision', 'fp32',
                    '--num_query', '15'], 'every difference above at once: their batch norm, U(0, 1) batch-norm '
                                          'weights, float32, 15 validation queries'),
}


def command(name, args, seed=0):
    flags, _ = VARIANTS[name]
    return ['python', 'protonet.py', *RECIPE, '--seed', str(seed), *flags, '--num_train_iterations', str(EPISODES),
            '--val_interval', str(VAL_INTERVAL), '--num_val_tasks', str(VAL_TASKS), '--log_dir',
            log_dir_of(name, args, seed), '--data_dir', args.data_dir]


def log_dir_of(name, args, seed):
    return os.path.join(args.out, 'runs', name + (f'.seed_{seed}' if seed else ''))


def row(name, args, seed):
    """'| name | seed | what | best validation (episode) | at the end | minutes |', or None before it has run."""
    log_dir = log_dir_of(name, args, seed)
    if not os.path.isdir(log_dir):
        return None
    minutes, points = validation_clock(log_dir)
    if not points:
        return None
    best_step, best, _ = max(points, key=lambda point: point[1])
    last_step, last, _ = points[-1]
    return (f'| `{name}` | {seed} | {VARIANTS[name][1]} | {100 * best:.1f} ({best_step + 1}) | {100 * last:.1f} '
            f'({last_step + 1}) | {minutes:.0f} |')


def seeds_run(args):
    """0 and the S of every runs/NAME.seed_S folder, in order."""
    runs = os.path.join(args.out, 'runs')
    folders = os.listdir(runs) if os.path.isdir(runs) else []
    return sorted({0, *(int(folder.rsplit('.seed_', 1)[1]) for folder in folders if '.seed_' in folder)})


def write_index(args):
    rows = [line for line in (row(name, args, seed) for name in VARIANTS for seed in seeds_run(args)) if line]
    text = '\n'.join([
        '# ProtoNet: today\'s recipe against Snell et al.\'s code, one difference at a time', '',
        'Made by `python -m tools.protonet_ablation --data_dir D --only NAME ... [--seed S]`, a few variants at a '
        'time (the latest: `' + ' '.join(portable(sys.argv[1:])) + '`): each variant trains '
        f'{EPISODES} episodes and validates 20-way 1-shot (5 queries a class unless said) on {VAL_TASKS} tasks of '
        f"Vinyals et al.'s validation characters every {VAL_INTERVAL} episodes. No test class was drawn.", '',
        '| variant | seed | what it changes | best validation, 20-way 1-shot % (episode) | last validation % '
        '(episode) | training minutes |', '|---|---|---|---|---|---|', *rows, ''])
    path = os.path.join(args.out, 'index.md')
    with open(path, 'w') as file:
        file.write(text)
    print(f'wrote {path}')


def parse_args(argv):
    parser = ArgumentParser(description=__doc__, formatter_class=HelpWithDefaults)
    parser.add_argument('--data_dir', required=True, help="Omniglot's folder (images_background.zip and the rest)")
    parser.add_argument('--out', default='reports/protonet_ablation', help='where the runs and index.md go')
    parser.add_argument('--only', nargs='+', choices=list(VARIANTS), help='train these variants alone')
    parser.add_argument('--seed', type=seed_flag, default=0,
                        help="the runs' --seed (0: in runs/NAME, else in runs/NAME.seed_S)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isdir(args.data_dir):
        raise UserError(f'--data_dir {args.data_dir}: no such folder; give the folder holding Omniglot')
    for name in args.only or VARIANTS:
        run_command(command(name, args, args.seed))
    write_index(args)


if __name__ == '__main__':
    run_cli(main)
