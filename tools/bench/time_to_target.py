"""Wall time to the course's targets: the course's default command against `--fast`, each run
to `--target_accuracy` on the validation split and then tested on 600 tasks of the test split,
every command in its own process, timed from its launch to its exit (imports, data loading,
tuning, training and every validation included).

    python bench.py --data_dir D/omniglot --only time_to_target --algorithms protonet --seeds 3
"""
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from fewshot import files
from fewshot.engine import tuning
from tools.bench.common import ROOT

# (name, program, the course's test shot, target, the flags of the default command)
TARGETS = {'protonet': ('ProtoNet 5-way 5-shot', 'protonet.py', 5, 0.99, ['--num_support', '5']),
           'maml': ('MAML 5-way 1-shot', 'maml.py', 1, 0.97, [])}
REACHED = re.compile(r'reached validation accuracy ([0-9.]+) \(\d+ tasks\) at step (\d+)')
TESTED = re.compile(r'Accuracy over \d+ test tasks: mean ([0-9.]+), 95% confidence interval ([0-9.]+)')


def cache_without_tuning(work_dir):
    """A cache root holding the user's cached data (linked) but no tuning cache: a command run with
    it times its ways to compute a step as a first run of its settings on a machine does."""
    root = tempfile.mkdtemp(prefix='cache.', dir=work_dir)
    users = files.user_cache_folder()
    ours = os.path.join(root, os.path.basename(users))
    os.makedirs(ours)
    for name in os.listdir(users) if os.path.isdir(users) else []:
        if name != os.path.basename(tuning.cache_path()):
            os.symlink(os.path.join(users, name), os.path.join(ours, name))
    return root


def run_command(words, log_path):
    """Run python words... from the repository root, its output kept in log_path; (seconds, output).
    Each command has no tuning cache (cache_without_tuning)."""
    environment = dict(os.environ, XDG_CACHE_HOME=cache_without_tuning(os.path.dirname(log_path)))
    start = time.perf_counter()
    with open(log_path, 'w') as log:
        done = subprocess.run([sys.executable, *words], cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
                              env=environment)
    seconds = time.perf_counter() - start
    with open(log_path, 'a') as log:
        log.write(done.stdout)
    if done.returncode != 0:
        raise SystemExit(f'{" ".join(words)} failed (exit {done.returncode}); its output: {log_path}')
    return seconds, done.stdout


def time_to_target(algorithm, recipe, seed, data_dir, work_dir, extra=()):
    """Train one command to its target and test it: {'steps', 'seconds', 'val', 'test', 'ci'} (steps and
    val None when the run ended short of the target)."""
    _, program, shot, target, flags = TARGETS[algorithm]
    log_dir = os.path.join(work_dir, f'{algorithm}.{recipe}.seed_{seed}')
    chosen = ['--fast'] if recipe == 'fast' else []
    words = [program, *flags, *chosen, *extra, '--target_accuracy', str(target), '--data_dir', data_dir,
             '--seed', str(seed), '--log_dir', log_dir]
    seconds, output = run_command(words, log_dir + '.train.log')
    reached = REACHED.search(output)
    _, tested = run_command([program, '--test', '--log_dir', log_dir, '--num_support', str(shot)],
                            log_dir + '.test.log')
    test = TESTED.search(tested)
    return {'steps': int(reached.group(2)) + 1 if reached else None, 'val': float(reached.group(1)) if reached else None,
            'seconds': seconds, 'test': float(test.group(1)), 'ci': float(test.group(2))}


def bench_time_to_target(data_dir, algorithms, recipes, seeds, machine):
    """Markdown tables: per run, then per recipe the median over seeds and the ratio to the default."""
    work_dir = tempfile.mkdtemp(prefix='time_to_target.')
    print(f'\n## Time to the course\'s targets on {machine} (logs: {work_dir})\n')
    for algorithm in algorithms:
        name, _, _, target, _ = TARGETS[algorithm]
        print(f'\n### {name}: validation accuracy {target}, then 600 test tasks\n')
        print('| recipe | seed | steps to target | wall time to target (s) | validation accuracy | test accuracy '
              '(95% CI) | test reaches target |')
        print('|---|---|---|---|---|---|---|')
        medians = {}
        for recipe, extra in recipes:
            runs = []
            for seed in range(seeds):
                run = time_to_target(algorithm, recipe, seed, data_dir, work_dir, extra)
                runs.append(run)
                print(f'| {recipe} | {seed} | {run["steps"] or "not reached"} | {run["seconds"]:.0f} | '
                      f'{run["val"] or "-"} | {run["test"]:.4f} ({run["ci"]:.4f}) | '
                      f'{"yes" if run["test"] >= target else "no"} |', flush=True)
            medians[recipe] = statistics.median(r['seconds'] for r in runs)
        default = medians.get('default')
        print('\n| recipe | median wall time to target (s) | default / recipe |\n|---|---|---|')
        for recipe, seconds in medians.items():
            ratio = f'{default / seconds:.1f}x' if default else '-'
            print(f'| {recipe} | {seconds:.0f} | {ratio} |')
