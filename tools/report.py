"""Reproduce the homework report or the papers' Omniglot table: run the
experiments with the same command lines a user would type, then write the
figures and tables into one folder with an index.md.

    python report.py --quick --data_dir D/omniglot --metabolism_dir D/metabolism   # about an hour on 2 CPU cores
    python report.py --device gpu --data_dir D/omniglot --metabolism_dir D/metabolism   # the full protocol
    python report.py --protocol papers --device gpu --data_dir D/omniglot   # the papers' table (--quick: shortened)
    python report.py --protocol papers --fast --data_dir D/omniglot   # the papers' table on a CPU (PAPER_FAST)
    python report.py --protocol papers --fast --only maml_5w1s --data_dir D/omniglot   # one entry, then the table

Finished runs are skipped (those that reached their --target_accuracy too); an
interrupted run is resumed from its latest checkpoint by the program itself.
Delete a run's folder under OUT/runs to redo it. --only NAME trains and tests
those experiments alone; the papers' table then shows the others as not run.
--jobs N trains up to N experiments at once, each in its own process (and
its own GPU when several are visible), its output in OUT/runs/NAME.log. The
first command that fails stops the report (the others are stopped and resume
next time).
"""
import argparse
import glob
import os
import sys

from fewshot import files
from fewshot.errors import UserError, run_cli
from fewshot.flags import ArgumentParser, HelpWithDefaults, positive_int
from fewshot.engine import checkpoints
from tools.report_figures import (plot_curves, plot_k_sweep, quick_note, read_csv, read_curve, results_table,
                                  validation_clock)
from tools.report_jobs import portable, run_command, run_commands, visible_gpus
from tools.report_recipes import (COMPARISONS, EXPERIMENTS, FAST_BORROWS, HOMEWORK_FAST, K_SWEEP, PAPER_EXPERIMENTS,
                                   PAPER_FAST, PAPER_TESTS, PAPER_TOLERANCE)


def experiments(args):
    """The experiments of the chosen protocol and length: name -> (script, flags, training steps)."""
    if args.protocol == 'papers' and args.fast:
        return PAPER_FAST
    table = PAPER_EXPERIMENTS if args.protocol == 'papers' else EXPERIMENTS
    extra = HOMEWORK_FAST if args.fast else []
    return {name: (script, [*flags, *extra], quick if args.quick else full)
            for name, (script, flags, quick, full) in table.items()}


# ---------------------------------------------------------------- running

def data_flags(script, args):
    return ['--data_dir', args.metabolism_dir if script == 'run_metabolism.py' else args.data_dir]


def command_line(name, args):
    """The command that trains an experiment; the program resumes it from its latest checkpoint."""
    script, flags, steps = experiments(args)[name]
    return ['python', script, *flags, '--num_train_iterations', str(steps), '--log_dir', log_dir_of(name, args),
            '--device', args.device, *data_flags(script, args)]


def log_dir_of(name, args):
    return os.path.join(args.out, 'runs', name)


def training_command(name, args):
    """The command that trains an experiment, or None when its run has ended: its last step saved,
    or its --target_accuracy reached."""
    command = command_line(name, args)
    if has_ended(command):
        print(f'{name}: done ({log_dir_of(name, args)}), skipped')
        return None
    return command


def has_ended(command):
    """Whether the run a training command names has ended, as the program itself decides."""
    from fewshot.engine import runner
    step, _ = runner.step_to_continue(parsed(command), says=False)
    return step == runner.FINISHED


def parsed(command):
    """A `python script ...` command as its program parses it (a fewshot Command)."""
    from fewshot import cli, registry
    return cli.parse(registry.program(command[1]), command[2:])


def train_experiments(names, args):
    """Train the experiments that are not finished, up to args.jobs at once (one GPU each where several)."""
    commands = {name: training_command(name, args) for name in names}
    todo = [name for name in names if commands[name] is not None]
    logs = [os.path.join(args.out, 'runs', f'{name}.log') for name in todo]
    for name in todo:
        record_machine(name, args)
    run_commands([commands[name] for name in todo], args.jobs, visible_gpus(args.device), logs)


def record_machine(name, args):
    """Add the machine about to train an experiment to its OUT/runs/NAME.machine (one line each)."""
    path = log_dir_of(name, args) + '.machine'
    seen = machines_of(name, args)
    here = this_machine(args.device)
    if here not in seen:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'a') as f:
            f.write(here + '\n')


def machines_of(name, args):
    """The machines that trained an experiment (its OUT/runs/NAME.machine)."""
    path = log_dir_of(name, args) + '.machine'
    return open(path).read().splitlines() if os.path.exists(path) else []


def this_machine(device):
    """The processor (or CUDA GPU) a run on this device trains on, the torch version and threads."""
    from fewshot.engine import tuning
    import torch
    if device in ('gpu', 'cuda') and torch.cuda.is_available():
        return f'{torch.cuda.get_device_name(0)}, torch {torch.__version__}'
    return tuning.machine()


def test_experiment(name, args, csv_name, extra_flags):
    """Test the best checkpoint of an experiment; the CSV is reused while newer than the checkpoints.
    --num_test_tasks is the report's unless extra_flags give their own."""
    script = experiments(args)[name][0]
    log_dir = os.path.join(args.out, 'runs', name)
    table = os.path.join(args.out, 'tests', csv_name)
    newest = max(os.path.getmtime(p) for p in glob.glob(os.path.join(log_dir, 'state*.pt')))
    if os.path.exists(table) and os.path.getmtime(table) > newest:
        return read_csv(table)
    os.makedirs(os.path.dirname(table), exist_ok=True)
    if os.path.exists(table):
        os.remove(table)
    task_count = [] if '--num_test_tasks' in extra_flags else ['--num_test_tasks', str(args.num_test_tasks)]
    run_command(['python', script, '--test', '--log_dir', log_dir, '--device', args.device, '--csv', table,
                 *task_count, *data_flags(script, args), *extra_flags])
    return read_csv(table)


def length_note(args):
    """The report's title note: shortened runs, or the papers' CPU recipes."""
    return quick_note(args.quick) or (' [--fast: CPU recipes]' if args.fast and args.protocol == 'papers' else '')


# ---------------------------------------------------------------- the report

def paper_table(args):
    """Markdown table of the papers' cells: our test accuracy (mean ± 95% CI) beside the paper's, with the
    steps and training time of the model tested; a cell whose model has not finished training says so."""
    lines = ['| algorithm | N-way | K-shot | trained by | steps: tested / trained | training time | validation at the '
             "figure | trained on | test Q | test tasks | accuracy % (mean ± 95% CI) | paper % | reaches the paper |",
             '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    tests = cell_tests(args)
    ended = {name: has_ended(command_line(name, args)) for name, *_ in tests.values()}
    for (algorithm, way, shot), (name, queries, num_tasks, flags, paper) in tests.items():
        cell = f'| {algorithm} | {way} | {shot} | `{name}` |'
        if not ended[name]:
            lines.append(f'{cell} not run | | | | {queries} | {num_tasks} | | {paper_figure(paper)} | |')
            continue
        test_flags = ['--num_way', str(way), '--num_support', str(shot), '--num_query', str(queries),
                      '--num_test_tasks', str(num_tasks), *flags]
        row = test_experiment(name, args, f'{name}_{way}w{shot}s.csv', test_flags)[0]
        mean, ci95 = 100 * float(row['mean']), 100 * float(row['ci95'])
        lines.append(f'{cell} {training_facts(name, args)} | {queries} | {num_tasks} | {mean:.1f} ± {ci95:.1f} | '
                     f'{paper_figure(paper)} | {verdict(mean, paper)} |')
    return '\n'.join(lines)


def cell_tests(args):
    """PAPER_TESTS, with the models --fast's cells take from other entries (FAST_BORROWS) in place."""
    borrows = FAST_BORROWS if args.fast else {}
    return {cell: (borrows.get(cell, name), *test) for cell, (name, *test) in PAPER_TESTS.items()}


def training_facts(name, args):
    """'tested step / trained steps | minutes | validation at the figure | machines' of a finished run: the
    step --test takes (the best validation one), the steps trained, the training time, the first validation
    at the recipe's --target_accuracy, and what trained it."""
    log_dir = log_dir_of(name, args)
    minutes, points = validation_clock(log_dir)
    target = parsed(command_line(name, args)).args.target_accuracy
    reached = next((f'step {step + 1}, {at:.0f} min' for step, value, at in points
                    if target is not None and value >= target), 'no')
    return (f'{checkpoints.best_step(log_dir) + 1} / {checkpoints.saved_steps(log_dir)[-1] + 1} | '
            f'{minutes:.0f} min | {reached} | {"; ".join(machines_of(name, args)) or "not recorded"}')


def paper_figure(paper):
    """'98.7 ± 0.4' (a paper's mean and 95% interval), or '98.8' where the paper gives no interval."""
    mean, interval = paper
    return f'{mean}' if interval is None else f'{mean} ± {interval}'


def verdict(mean, paper):
    """Whether our mean reaches the paper's figure: within its 95% interval or above, or within
    PAPER_TOLERANCE points where it gives none; else by how much it falls below that floor."""
    figure, interval = paper
    floor = figure - (PAPER_TOLERANCE if interval is None else interval)
    return 'yes' if round(mean, 1) >= round(floor, 1) else f'no: {floor - mean:.1f} points below {floor:.1f}'


def write_papers_report(args):
    """Train the papers' experiments (those of --only), test each cell of their table whose model has
    finished as the paper did, and write index.md."""
    table = experiments(args)
    train_experiments(args.only or list(table), args)
    commands = ['| experiment | training steps | command (plus `--data_dir D --device ...`) |', '|---|---|---|'] + [
        f'| `{n}` | {steps} | `python {script} {" ".join(flags)}` |' for n, (script, flags, steps) in table.items()]
    sections = [f'# The papers\' Omniglot table{length_note(args)}', '',
                'Made by `python report.py ' + ' '.join(portable(sys.argv[1:])) + '`. Settings and their sources: '
                'docs/results.md.', '',
                *commands, '', paper_table(args), '']
    with open(os.path.join(args.out, 'index.md'), 'w') as f:
        f.write('\n'.join(sections))
    print(f'report written to {os.path.join(args.out, "index.md")}')


def write_report(args):
    if args.protocol == 'papers':
        return write_papers_report(args)
    out, table = args.out, experiments(args)
    train_experiments(args.only or list(table), args)
    unfinished = [name for name in table if not has_ended(command_line(name, args))]
    if unfinished:
        print(f'the report waits for {", ".join(unfinished)}: run report.py again without --only')
        return
    sections = [f'# Homework report{quick_note(args.quick)}', '',
                'Made by `python report.py ' + ' '.join(portable(sys.argv[1:])) + '`. Steps per run: '
                + ', '.join(f'{n} {steps}' for n, (_, _, steps) in table.items()) + '.', '']
    for figure, (title, caption, lines) in COMPARISONS.items():
        curves = {label: read_curve(os.path.join(out, 'runs', name)) for name, label in lines}
        plot_curves(curves, title, os.path.join(out, figure), args.quick)
        sections += [f'## {title}', '', f'![{title}]({figure})', '', caption + quick_note(args.quick), '']
    protonet_test = {f'ProtoNet trained {name[-4:]}': test_experiment(name, args, f'{name}_5w1s.csv',
                                                                        ['--num_support', '1'])
                     for name in ('protonet_5w5s', 'protonet_5w1s')}
    sections += ['## ProtoNet test accuracy, 5-way 1-shot', '', results_table(protonet_test), '']
    sweep_flags = ['--num_support', *map(str, K_SWEEP), '--num_query', '10']
    sweeps = {'ProtoNet (trained 5w1s)': test_experiment('protonet_5w1s', args, 'protonet_5w1s_k_sweep.csv',
                                                         sweep_flags),
              'MAML, learned inner LRs': test_experiment('maml_learned_inner_lrs_0.4', args,
                                                         'maml_learned_k_sweep.csv', sweep_flags)}
    plot_k_sweep(sweeps, os.path.join(out, 'k_sweep.png'), args.quick)
    sections += ['## Test-time K sweep', '', '![K sweep](k_sweep.png)', '',
                 'Models trained 5-way 1-shot, tested with K support examples per class and 10 queries; '
                 f'bars are 95% confidence intervals over {args.num_test_tasks} tasks.' + quick_note(args.quick), '',
                 results_table(sweeps), '']
    metabolism = {label: test_experiment(name, args, f'{name}.csv', [])
                  for name, label in (('metabolism_protonet', 'ProtoNet'), ('metabolism_maml', 'MAML'))}
    sections += ['## TDC metabolism, 2-way 5-shot, held-out assays\' test halves', '', results_table(metabolism), '']
    with open(os.path.join(out, 'index.md'), 'w') as f:
        f.write('\n'.join(sections))
    print(f'report written to {os.path.join(out, "index.md")}')


def parse_args(argv=None):
    parser = ArgumentParser(prog='report.py', description='Run the report\'s experiments and draw its figures '
                                  'and tables.', epilog=papers_fast_epilog())
    parser.formatter_class = HelpWithRecipes
    parser.add_argument('--protocol', choices=('homework', 'papers'), default='homework',
                        help="the course homework's experiments, or the papers' Omniglot table (Vinyals split)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument('--quick', action='store_true', help='shortened runs (about an hour on 2 CPU cores)')
    length.add_argument('--fast', action='store_true',
                        help="full strength on a CPU: the papers' table by the recipes below, the homework's "
                             'full-length runs in bfloat16 where the CPU has it')
    parser.add_argument('--only', nargs='+', metavar='NAME', default=None,
                        help='train and test these experiments alone (names below, or reports/*/index.md)')
    parser.add_argument('--out', default=None,
                        help='output folder (default reports/full, quick, fast, each with _papers for the papers)')
    parser.add_argument('--device', default=None, help='default: cpu with --quick or --fast, else gpu')
    parser.add_argument('--data_dir', default=files.DATA_DIR, help='Omniglot data folder (D/omniglot of a data root D)')
    parser.add_argument('--metabolism_dir', '--datadir', dest='metabolism_dir', default=os.path.join(files.DATA_DIR, 'metabolism'),
                        help='metabolism data folder (--datadir is the same flag)')
    parser.add_argument('--num_test_tasks', type=positive_int, default=600, help='tasks per test evaluation')
    parser.add_argument('--jobs', type=positive_int, default=1,
                        help='experiments trained at once (each its own process, and its own GPU where several)')
    args = parser.parse_args(argv)
    names = list(experiments(args))
    unknown = [name for name in args.only or [] if name not in names]
    if unknown:
        raise UserError(f'--only {unknown[0]}: not an experiment of --protocol {args.protocol}; choose from '
                              + ', '.join(names))
    length = 'quick' if args.quick else 'fast' if args.fast else 'full'
    args.out = args.out or os.path.join('reports', length + ('_papers' if args.protocol == 'papers' else ''))
    args.device = args.device or ('cpu' if args.quick or args.fast else 'gpu')
    args.data_dir, args.metabolism_dir = os.path.abspath(args.data_dir), os.path.abspath(args.metabolism_dir)
    args.out = os.path.abspath(args.out)
    return args


class HelpWithRecipes(HelpWithDefaults, argparse.RawDescriptionHelpFormatter):
    """--help with each flag's default and the recipes' lines as written."""


def papers_fast_epilog():
    """--help's last lines: the papers' CPU recipes (PAPER_FAST), one command each."""
    return "--protocol papers --fast trains (PAPER_FAST in tools/report_recipes.py):\n" + '\n'.join(
        f'  {name}: python {script} {" ".join(flags)} --num_train_iterations {steps}'
        for name, (script, flags, steps) in PAPER_FAST.items())


def main(argv=None):
    run_cli(lambda: write_report(parse_args(argv)))
