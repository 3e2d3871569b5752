"""Reproduce the homework report or the papers' Omniglot table: run the
experiments with the same command lines a user would type, then write the
figures and tables into one folder with an index.md.

    python report.py --quick --data_dir D/omniglot --metabolism_dir D/metabolism   # about an hour on 2 CPU cores
    python report.py --device gpu --data_dir D/omniglot --metabolism_dir D/metabolism   # the full protocol
    python report.py --protocol papers --device gpu --data_dir D/omniglot   # the papers' table (--quick: shortened)

Runs whose last checkpoint exists are skipped; an interrupted run is resumed
from its latest checkpoint. Delete a run's folder under OUT/runs to redo it.
--jobs N trains up to N experiments at once, each in its own process (and
its own GPU when several are visible), its output in OUT/runs/NAME.log. The
first command that fails stops the report (the others are stopped and resume
next time).
"""
import argparse
import csv
import glob
import os
import subprocess
import sys
import time

from fewshot import files
from fewshot.flags import positive_int
from fewshot.engine import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K_SWEEP = [1, 2, 4, 6, 8, 10]

# name -> (script, flags, training steps in the quick protocol, in the full protocol)
EXPERIMENTS = {
    'protonet_5w5s': ('protonet.py', ['--num_support', '5'], 300, 5000),
    'protonet_5w1s': ('protonet.py', ['--num_support', '1'], 300, 5000),
    'maml_inner_lr_0.4': ('maml.py', ['--inner_lr', '0.4'], 200, 15000),
    'maml_inner_lr_0.04': ('maml.py', ['--inner_lr', '0.04'], 200, 15000),
    'maml_inner_lr_0.04_5_steps': ('maml.py', ['--inner_lr', '0.04', '--num_inner_steps', '5'], 200, 15000),
    'maml_learned_inner_lrs_0.4': ('maml.py', ['--inner_lr', '0.4', '--learn_inner_lrs'], 200, 15000),
    'maml_first_order': ('maml.py', ['--inner_lr', '0.4', '--first_order'], 100, 15000),
    'maml_adagrad_5_steps': ('maml.py', ['--inner_lr', '0.4', '--inner_optimizer', 'adagrad',
                                         '--num_inner_steps', '5'], 60, 15000),
    'maml_anneal_derivative_order': ('maml.py', ['--inner_lr', '0.4', '--anneal_derivative_order', '50'], 100, 15000),
    'metabolism_protonet': ('run_metabolism.py', [], 2000, 8000),
    'metabolism_maml': ('run_metabolism.py', ['--algorithm', 'maml'], 2000, 8000),
}
# figure file -> (title, caption, [(experiment, label)])
COMPARISONS = {
    'protonet_val.png': ('ProtoNet, 5-way, validation query accuracy',
                         'ProtoNet trained 5-way 5-shot vs 5-way 1-shot (15 queries, 16 tasks per step).',
                         [('protonet_5w5s', '5-shot'), ('protonet_5w1s', '1-shot')]),
    'maml_inner_lr.png': ('MAML 5w1s: inner learning rate',
                          'MAML 5-way 1-shot, one inner step, inner LR 0.4 vs 0.04.',
                          [('maml_inner_lr_0.4', 'inner LR 0.4'), ('maml_inner_lr_0.04', 'inner LR 0.04')]),
    'maml_inner_steps.png': ('MAML 5w1s: inner steps at LR 0.04',
                             'MAML 5-way 1-shot, inner LR 0.04, 1 vs 5 inner steps.',
                             [('maml_inner_lr_0.04', '1 step'), ('maml_inner_lr_0.04_5_steps', '5 steps')]),
    'maml_learned_lrs.png': ('MAML 5w1s: learned vs fixed inner LRs',
                             'MAML 5-way 1-shot, one inner step; fixed inner LR 0.4 vs learned per-tensor LRs '
                             'starting at 0.4.',
                             [('maml_inner_lr_0.4', 'fixed 0.4'), ('maml_learned_inner_lrs_0.4', 'learned')]),
    'maml_ntu_variants.png': ('MAML 5w1s: the NTU report\'s variants',
                              'Second-order MAML (inner LR 0.4, 1 step) against first-order MAML, a 5-step '
                              'Adagrad inner loop (eps 0.7) and derivative-order annealing (first-order for the '
                              'first 50 steps in the quick protocol). The full protocol anneals for 50 steps too.',
                              [('maml_inner_lr_0.4', 'MAML'), ('maml_first_order', 'first-order'),
                               ('maml_adagrad_5_steps', 'Adagrad, 5 steps'),
                               ('maml_anneal_derivative_order', 'annealed order')]),
    'metabolism_val.png': ('TDC metabolism, 2-way 5-shot, validation query accuracy',
                           'ProtoNet vs MAML (one inner step, LR 0.1) on the MLP encoder; held-out assays\' '
                           'validation halves.',
                           [('metabolism_protonet', 'ProtoNet'), ('metabolism_maml', 'MAML')]),
}
KEY_TAGS = ['val_accuracy/query', 'val_accuracy/post_adapt_query']

# The papers' Omniglot protocols (docs/results.md cites each setting): Vinyals et al.'s split with
# rotations; ProtoNet (Snell et al., 2017) trains 60-way episodes with 5 queries per class, one
# episode per step, Adam at 1e-3 halved every 2000 episodes; MAML (Finn et al., 2017) trains with
# K queries per class, 32 tasks per step and one inner step of 0.4 (5-way) or 16 tasks and five
# steps of 0.1 (20-way).
VINYALS = ['--split', 'vinyals', '--augment_rotations']
PROTONET_PAPER = [*VINYALS, '--num_way', '60', '--num_query', '5', '--batch_size', '1', '--lr_halving_steps', '2000']
MAML_5WAY_PAPER = [*VINYALS, '--batch_size', '32', '--inner_lr', '0.4', '--num_inner_steps', '1']
MAML_20WAY_PAPER = [*VINYALS, '--num_way', '20', '--batch_size', '16', '--inner_lr', '0.1', '--num_inner_steps', '5']
PAPER_EXPERIMENTS = {
    'protonet_60w1s': ('protonet.py', [*PROTONET_PAPER, '--num_support', '1'], 1500, 30000),
    'protonet_60w5s': ('protonet.py', [*PROTONET_PAPER, '--num_support', '5'], 600, 30000),
    'maml_5w1s': ('maml.py', [*MAML_5WAY_PAPER, '--num_support', '1', '--num_query', '1'], 200, 60000),
    'maml_5w5s': ('maml.py', [*MAML_5WAY_PAPER, '--num_support', '5', '--num_query', '5'], 100, 60000),
    'maml_20w1s': ('maml.py', [*MAML_20WAY_PAPER, '--num_support', '1', '--num_query', '1'], 60, 60000),
    'maml_20w5s': ('maml.py', [*MAML_20WAY_PAPER, '--num_support', '5', '--num_query', '5'], 25, 60000),
}
# the papers' table: (algorithm, N, K) -> (experiment, test queries per class, test tasks, test flags, paper's %)
PAPER_TESTS = {
    ('ProtoNet', 5, 1): ('protonet_60w1s', 5, 1000, [], 98.8),
    ('ProtoNet', 5, 5): ('protonet_60w5s', 5, 1000, [], 99.7),
    ('ProtoNet', 20, 1): ('protonet_60w1s', 5, 1000, [], 96.0),
    ('ProtoNet', 20, 5): ('protonet_60w5s', 5, 1000, [], 98.9),
    ('MAML', 5, 1): ('maml_5w1s', 1, 600, ['--num_inner_steps', '3'], 98.7),
    ('MAML', 5, 5): ('maml_5w5s', 5, 600, ['--num_inner_steps', '3'], 99.9),
    ('MAML', 20, 1): ('maml_20w1s', 1, 600, ['--num_inner_steps', '5'], 95.8),
    ('MAML', 20, 5): ('maml_20w5s', 5, 600, ['--num_inner_steps', '5'], 98.9),
}


def experiments(args):
    """The experiments of the chosen protocol: name -> (script, flags, quick steps, full steps)."""
    return PAPER_EXPERIMENTS if args.protocol == 'papers' else EXPERIMENTS


# ---------------------------------------------------------------- running

def data_flags(script, args):
    return ['--data_dir', args.metabolism_dir if script == 'run_metabolism.py' else args.data_dir]


def run_command(command):
    """Run `python script ...` from the project folder with this interpreter, echoing it."""
    run_commands([command], jobs=1)


def run_commands(commands, jobs, gpus=(), logs=None):
    """Run `python ...` commands from the project folder, up to `jobs` at once.

    With jobs > 1 each command's output goes to the matching file of logs, and
    with GPUs listed (`gpus`: CUDA device ids) each running command gets one of
    them alone through CUDA_VISIBLE_DEVICES. The first command that fails stops
    the others and raises SystemExit with one line naming it.
    """
    waiting, running, failed = list(enumerate(commands)), {}, []
    free = list(gpus)
    while waiting or running:
        while waiting and len(running) < jobs:
            index, command = waiting.pop(0)
            env = dict(os.environ)
            gpu = free.pop(0) if free else None
            if gpu is not None:
                env['CUDA_VISIBLE_DEVICES'] = str(gpu)
            print('$ ' + ' '.join(command) + (f'   (GPU {gpu})' if gpu is not None else ''), flush=True)
            if jobs > 1:
                os.makedirs(os.path.dirname(os.path.abspath(logs[index])), exist_ok=True)
            output = open(logs[index], 'w') if jobs > 1 else None
            running[index] = (subprocess.Popen([sys.executable, *command[1:]], cwd=ROOT, env=env, stdout=output,
                                               stderr=subprocess.STDOUT if output else None), command, gpu, output)
        for index, (process, command, gpu, output) in list(running.items()):
            if process.poll() is None:
                continue
            del running[index]
            if output:
                output.close()
            if gpu is not None:
                free.append(gpu)
            if process.returncode != 0:
                failed.append(f'{" ".join(command)} failed (exit {process.returncode}'
                              + (f', output in {logs[index]})' if output else ', see above)'))
        if failed:
            stop(running)
            raise SystemExit(f'error: {failed[0]}; fix it and run report.py again: finished runs are kept, '
                             'stopped ones resume')
        time.sleep(0.1)


def stop(running):
    """Stop the running commands (each resumes from its latest checkpoint next time)."""
    for process, _, _, output in running.values():
        process.terminate()
        process.wait()
        if output:
            output.close()


def training_command(name, args):
    """The command that trains (or resumes) an experiment, or None if its last checkpoint exists."""
    script, flags, quick_steps, full_steps = experiments(args)[name]
    steps = quick_steps if args.quick else full_steps
    log_dir = os.path.join(args.out, 'runs', name)
    saved = checkpoints.saved_steps(log_dir) if os.path.isdir(log_dir) else []
    if saved and saved[-1] == steps - 1:
        print(f'{name}: done ({log_dir}/state{steps - 1}.pt), skipped')
        return None
    command = ['python', script, *flags, '--num_train_iterations', str(steps), '--log_dir', log_dir,
               '--device', args.device, *data_flags(script, args)]
    if saved:
        command += ['--checkpoint_step', str(saved[-1])]
    return command


def train_experiments(names, args):
    """Train the experiments that are not finished, up to args.jobs at once (one GPU each where several)."""
    commands = {name: training_command(name, args) for name in names}
    todo = [name for name in names if commands[name] is not None]
    logs = [os.path.join(args.out, 'runs', f'{name}.log') for name in todo]
    run_commands([commands[name] for name in todo], args.jobs, visible_gpus(args.device), logs)


def visible_gpus(device):
    """The CUDA device ids jobs may take, one each, when the report runs on GPUs."""
    if device not in ('gpu', 'cuda'):
        return []
    import torch
    listed = os.environ.get('CUDA_VISIBLE_DEVICES')
    ids = [d for d in listed.split(',') if d.strip()] if listed else list(range(torch.cuda.device_count()))
    return ids if len(ids) > 1 else []


def test_experiment(name, args, csv_name, extra_flags):
    """Test the best checkpoint of an experiment; the CSV is reused while newer than the checkpoints.
    extra_flags come last, so they may replace --num_test_tasks."""
    script = experiments(args)[name][0]
    log_dir = os.path.join(args.out, 'runs', name)
    table = os.path.join(args.out, 'tests', csv_name)
    newest = max(os.path.getmtime(p) for p in glob.glob(os.path.join(log_dir, 'state*.pt')))
    if os.path.exists(table) and os.path.getmtime(table) > newest:
        return read_csv(table)
    os.makedirs(os.path.dirname(table), exist_ok=True)
    if os.path.exists(table):
        os.remove(table)
    run_command(['python', script, '--test', '--log_dir', log_dir, '--device', args.device, '--csv', table,
                 '--num_test_tasks', str(args.num_test_tasks), *data_flags(script, args), *extra_flags])
    return read_csv(table)


# ---------------------------------------------------------------- reading and drawing

def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def read_curve(log_dir, tags=KEY_TAGS):
    """(steps, values) of the first of tags found in a run's event files; a resumed run's
    re-logged steps keep their latest value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    points = {}
    for path in sorted(glob.glob(os.path.join(log_dir, 'events.out.tfevents.*')), key=os.path.getmtime):
        events = EventAccumulator(path, size_guidance={'scalars': 0})
        events.Reload()
        tag = next((t for t in tags if t in events.Tags()['scalars']), None)
        if tag is not None:
            points.update({e.step: e.value for e in events.Scalars(tag)})
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def quick_note(quick):
    return ' [quick protocol: shortened runs]' if quick else ''


def plot_curves(curves, title, path, quick):
    """curves: {label: (steps, values)} -> a PNG of validation accuracy against step."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for label, (steps, values) in curves.items():
        axes.plot(steps, values, label=label, marker='.' if len(steps) < 30 else None)
    axes.set_xlabel('training step')
    axes.set_ylabel('validation query accuracy')
    axes.set_title(title + quick_note(quick), fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_k_sweep(sweeps, path, quick):
    """sweeps: {label: CSV rows of a K sweep} -> a PNG of test accuracy against K with 95% CI bars."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for label, rows in sweeps.items():
        axes.errorbar([int(r['num_support']) for r in rows], [float(r['mean']) for r in rows],
                      yerr=[float(r['ci95']) for r in rows], capsize=3, marker='o', label=label)
    axes.set_xlabel('K (support examples per class at test), Q = 10')
    axes.set_ylabel('5-way test accuracy')
    axes.set_title('Test-time K sweep' + quick_note(quick), fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def results_table(rows_by_label):
    """Markdown table: label, K, Q, tasks, mean ± 95% CI, from CSV rows."""
    lines = ['| model | test K | test Q | tasks | accuracy (mean ± 95% CI) |', '|---|---|---|---|---|']
    for label, rows in rows_by_label.items():
        for r in rows:
            lines.append(f'| {label} | {r["num_support"]} | {r["num_query"]} | {r["num_test_tasks"]} | '
                         f'{float(r["mean"]):.3f} ± {float(r["ci95"]):.3f} |')
    return '\n'.join(lines)


# ---------------------------------------------------------------- the report

def paper_table(args):
    """Markdown table of the papers' cells: our test accuracy (mean ± 95% CI) beside the paper's."""
    lines = ['| algorithm | N-way | K-shot | trained by | test queries per class | test tasks | '
             'accuracy % (mean ± 95% CI) | paper % |', '|---|---|---|---|---|---|---|---|']
    for (algorithm, way, shot), (name, queries, num_tasks, flags, paper) in PAPER_TESTS.items():
        test_flags = ['--num_way', str(way), '--num_support', str(shot), '--num_query', str(queries),
                      '--num_test_tasks', str(num_tasks), *flags]
        row = test_experiment(name, args, f'{name}_{way}w{shot}s.csv', test_flags)[0]
        lines.append(f'| {algorithm} | {way} | {shot} | `{name}` | {queries} | {num_tasks} | '
                     f'{100 * float(row["mean"]):.1f} ± {100 * float(row["ci95"]):.1f} | {paper} |')
    return '\n'.join(lines)


def write_papers_report(args):
    """Train the papers' experiments, test each cell of their table as the paper did, write index.md."""
    names = list(PAPER_EXPERIMENTS)
    train_experiments(names, args)
    steps = ', '.join(f'{n} {PAPER_EXPERIMENTS[n][2 if args.quick else 3]}' for n in names)
    commands = ['| experiment | command (plus `--data_dir D --device ...`) |', '|---|---|'] + [
        f'| `{n}` | `python {PAPER_EXPERIMENTS[n][0]} {" ".join(PAPER_EXPERIMENTS[n][1])}` |' for n in names]
    sections = [f'# The papers\' Omniglot table{quick_note(args.quick)}', '',
                'Made by `python report.py ' + ' '.join(sys.argv[1:]) + f'`. Steps per run: {steps}. '
                'Settings and their sources: docs/results.md.', '', *commands, '', paper_table(args), '']
    with open(os.path.join(args.out, 'index.md'), 'w') as f:
        f.write('\n'.join(sections))
    print(f'report written to {os.path.join(args.out, "index.md")}')


def write_report(args):
    if args.protocol == 'papers':
        return write_papers_report(args)
    out = args.out
    train_experiments(list(EXPERIMENTS), args)
    sections = [f'# Homework report{quick_note(args.quick)}', '',
                'Made by `python report.py ' + ' '.join(sys.argv[1:]) + '`. Steps per run: '
                + ', '.join(f'{n} {EXPERIMENTS[n][2 if args.quick else 3]}' for n in EXPERIMENTS) + '.', '']
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
    parser = argparse.ArgumentParser(description='Run the report\'s experiments and draw its figures and tables.')
    parser.add_argument('--protocol', choices=('homework', 'papers'), default='homework',
                        help="the course homework's experiments, or the papers' Omniglot table (Vinyals split)")
    parser.add_argument('--quick', action='store_true', help='shortened runs (about an hour on 2 CPU cores)')
    parser.add_argument('--out', default=None, help='output folder (default reports/quick or reports/full)')
    parser.add_argument('--device', default=None, help='default: cpu with --quick, else gpu')
    parser.add_argument('--data_dir', default=files.DATA_DIR, help='Omniglot data folder (D/omniglot of a data root D)')
    parser.add_argument('--metabolism_dir', '--datadir', dest='metabolism_dir', default=os.path.join(files.DATA_DIR, 'metabolism'),
                        help='metabolism data folder (--datadir is the same flag)')
    parser.add_argument('--num_test_tasks', type=positive_int, default=600, help='tasks per test evaluation')
    parser.add_argument('--jobs', type=positive_int, default=1,
                        help='experiments trained at once (each its own process, and its own GPU where several)')
    args = parser.parse_args(argv)
    args.out = args.out or os.path.join('reports', ('quick' if args.quick else 'full')
                                        + ('_papers' if args.protocol == 'papers' else ''))
    args.device = args.device or ('cpu' if args.quick else 'gpu')
    args.data_dir, args.metabolism_dir = os.path.abspath(args.data_dir), os.path.abspath(args.metabolism_dir)
    args.out = os.path.abspath(args.out)
    return args


def main(argv=None):
    write_report(parse_args(argv))
