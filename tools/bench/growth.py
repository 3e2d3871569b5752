"""How time and peak memory per step grow with N, K, inner steps and tasks per step, with a figure."""
from tools.bench.common import run_child


GROWTH_BASE = dict(way=5, shot=1, inner_steps=1, tasks=16)  # one factor at a time moves from here
GROWTH_FACTORS = [('way', 'N-way', (5, 20)), ('shot', 'K-shot', (1, 5)), ('inner_steps', 'inner steps', (1, 2, 3, 5)),
                  ('tasks', 'tasks per step', (4, 8, 16, 32))]


def bench_growth(data_dir, repeats, device, plot_path):
    """Time and peak memory per training step (compute only, the project's defaults) of ProtoNet
    and second-order MAML as N, K, inner steps and tasks per step grow, one at a time."""
    memory = 'peak GPU MB' if device == 'cuda' else 'peak RSS MB'
    print(f'\n## How cost grows: ms / step and {memory}, one factor at a time from 5-way 1-shot, 15 queries per '
          'class, 1 inner step at 0.4, 16 tasks (compute only; the defaults: ProtoNet per-task encoder calls, '
          'MAML a per-task loop with a backward per task)\n')
    print(f'| factor | value | ProtoNet ms | ProtoNet {memory} | MAML ms | MAML {memory} |')
    print('|---|---|---|---|---|---|')
    rows = []
    for key, label, values in GROWTH_FACTORS:
        if key == 'inner_steps':
            results = [(None, run_child('maml_fixed', data_dir, repeats, device, tasks_per_backward=-1,
                                        **{**GROWTH_BASE, key: v})) for v in values]
        else:
            results = [tuple(run_child(kind, data_dir, repeats, device, tasks_per_backward=-1,
                                       **{**GROWTH_BASE, key: v}) for kind in ('protonet_fixed', 'maml_fixed'))
                       for v in values]
        for value, (proto, meta) in zip(values, results):
            cells = ['-', '-'] if proto is None else [f'{1000 * proto["seconds"]:.0f}', f'{proto["peak_mb"]:.0f}']
            print(f'| {label} | {value} | {cells[0]} | {cells[1]} | {1000 * meta["seconds"]:.0f} | '
                  f'{meta["peak_mb"]:.0f} |')
        rows.append((label, values, results))
    if plot_path:
        plot_growth(rows, memory, plot_path)


def plot_growth(rows, memory, path):
    """Two rows of panels (ms / step, peak memory), one column per factor."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(2, len(rows), figsize=(3.2 * len(rows), 5.5))
    for column, (label, values, results) in enumerate(rows):
        for index, name in enumerate(('ProtoNet', 'MAML')):
            points = [(v, r[index]) for v, r in zip(values, results) if r[index] is not None]
            if points:
                style = dict(marker='o', color=f'C{index}', label=name)
                axes[0, column].plot([v for v, _ in points], [1000 * r['seconds'] for _, r in points], **style)
                axes[1, column].plot([v for v, _ in points], [r['peak_mb'] for _, r in points], **style)
        axes[1, column].set_xlabel(label)
        axes[0, column].set_xticks(values)
        axes[1, column].set_xticks(values)
    axes[0, 0].set_ylabel('ms / step')
    axes[1, 0].set_ylabel(memory)
    axes[0, 0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f'\n![how cost grows]({path})')
