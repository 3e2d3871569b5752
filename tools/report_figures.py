"""The report's reading of runs (validation curves, training clocks, test CSVs) and its figures and tables."""
import csv
import glob
import os

KEY_TAGS = ['val_accuracy/query', 'val_accuracy/post_adapt_query']


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def read_curve(log_dir, tags=KEY_TAGS):
    """(steps, values) of the first of tags found in a run's event files."""
    _, points = validation_clock(log_dir, tags)
    return [step for step, _, _ in points], [value for _, value, _ in points]


def validation_clock(log_dir, tags=KEY_TAGS):
    """(minutes of training, [(step, value, minutes of training by then)]) of a run's first tag of tags.
    Each event file (one per session) counts from its first scalar to its last, so start-up and the time
    between sessions are left out; a resumed run's re-logged steps keep their latest value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    seconds, points = 0.0, {}
    for path in sorted(glob.glob(os.path.join(log_dir, 'events.out.tfevents.*')), key=os.path.getmtime):
        events = EventAccumulator(path, size_guidance={'scalars': 0})
        events.Reload()
        times = [e.wall_time for tag in events.Tags()['scalars'] for e in events.Scalars(tag)]
        if not times:
            continue
        tag = next((t for t in tags if t in events.Tags()['scalars']), None)
        if tag is not None:
            points.update({e.step: (e.value, (seconds + e.wall_time - min(times)) / 60) for e in events.Scalars(tag)})
        seconds += max(times) - min(times)
    return seconds / 60, [(step, *points[step]) for step in sorted(points)]


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
