"""Compute only, the same fixed tasks for every variant: second-order MAML against naive code and
`higher`, its memory as tasks grow, and the levers (precision, image layout) against naive code."""
from tools.bench.common import PROTONET_GFLOP, higher_installed, median_seconds, run_child


def bench_maml_compute(data_dir, repeats, device, rounds):
    """Second-order MAML 5w1s on the same fixed tasks: ours, naive and `higher`; interleaved rounds."""
    variants = [('naive: params dict, per-task loop, one backward', 'maml_naive', {}),
                ('ours: one backward per meta-batch (`--tasks_per_backward 0`)', 'maml_fixed', {}),
                ('ours: a backward per task (default of the per-task loop)', 'maml_fixed',
                 dict(tasks_per_backward=1))]
    if higher_installed():
        variants.append(('`higher`, task by task', 'maml_higher', {}))
    for inner_steps, inner_lr in ((1, 0.4), (5, 0.04)):
        print(f'\n## MAML 5w1s, second-order, {inner_steps} inner step(s) at {inner_lr}, 15 queries, 16 tasks per '
              f'step: compute only, the same tasks for every variant ({rounds} interleaved rounds)\n')
        results = {name: [] for name, _, _ in variants}
        for _ in range(rounds):
            for name, kind, options in variants:
                results[name].append(run_child(kind, data_dir, repeats, device, tasks=16, inner_steps=inner_steps,
                                               inner_lr=inner_lr, **options))
        seconds = {name: median_seconds(rs) for name, rs in results.items()}
        naive = seconds[variants[0][0]]
        reference = seconds.get(variants[-1][0]) if higher_installed() else None
        print('| variant | ms / step (median of rounds) | peak RSS MB | vs naive | vs `higher` |')
        print('|---|---|---|---|---|')
        for name, rs in results.items():
            versus = f'{reference / seconds[name]:.2f}x' if reference else 'not installed'
            print(f'| {name} | {1000 * seconds[name]:.1f} | {max(r["peak_mb"] for r in rs):.0f} | '
                  f'{naive / seconds[name]:.2f}x | {versus} |')


def bench_maml_memory(data_dir, repeats, device):
    """Peak memory of second-order MAML with 5 inner steps as the tasks per step grow."""
    sizes = (1, 4, 16)
    variants = [('naive, one backward', 'maml_naive', {}), ('ours, one backward', 'maml_fixed', {}),
                ('ours, a backward per task (default)', 'maml_fixed', dict(tasks_per_backward=1))]
    if higher_installed():
        variants.append(('`higher`, task by task', 'maml_higher', {}))
    memory = 'peak GPU MB' if device == 'cuda' else 'peak RSS MB'
    print(f'\n## MAML 5w1s, second-order, 5 inner steps at 0.04: {memory} (ms / step) by tasks per step\n')
    print('| variant | ' + ' | '.join(f'{b} tasks' for b in sizes) + f' | growth 1 -> {sizes[-1]} tasks, MB |')
    print('|---|' + '---|' * (len(sizes) + 1))
    for name, kind, options in variants:
        rs = [run_child(kind, data_dir, repeats, device, tasks=b, inner_steps=5, inner_lr=0.04, **options)
              for b in sizes]
        cells = ' | '.join(f'{r["peak_mb"]:.0f} ({1000 * r["seconds"]:.0f} ms)' for r in rs)
        print(f'| {name} | {cells} | {rs[-1]["peak_mb"] - rs[0]["peak_mb"]:.0f} |')


def bench_levers(data_dir, repeats, device, rounds, peak):
    """Compute-only steps on fixed tasks against naive code: ProtoNet 5w5s and second-order MAML 5w1s,
    fp32 and bf16 (autocast), contiguous and channels_last inputs; interleaved rounds."""
    setups = [('ProtoNet 5w5s', dict(way=5, shot=5, tasks=16), 'protonet_naive_fixed', 'protonet_fixed'),
              ('MAML 5w1s, second-order, 1 step at 0.4', dict(way=5, shot=1, tasks=16, inner_steps=1, inner_lr=0.4),
               'maml_naive', 'maml_fixed'),
              ('MAML 5w1s, second-order, 5 steps at 0.04', dict(way=5, shot=1, tasks=16, inner_steps=5,
                                                                inner_lr=0.04), 'maml_naive', 'maml_fixed')]
    levers = [('fp32, contiguous', dict(channels_last='no')), ('fp32, channels_last', dict(channels_last='yes')),
              ('bf16, contiguous', dict(precision='bf16', channels_last='no')),
              ('bf16, channels_last', dict(precision='bf16', channels_last='yes'))]
    for title, shape, naive_kind, ours_kind in setups:
        print(f'\n## {title}, 15 queries per class, 16 tasks: compute only, the same tasks for every variant '
              f'({rounds} interleaved rounds)\n')
        variants = [('naive (course-style), fp32', naive_kind, {})] + \
            [(f'ours, {name}', ours_kind, dict(options, tasks_per_backward=-1)) for name, options in levers]
        results = {name: [] for name, _, _ in variants}
        for _ in range(rounds):
            for name, kind, options in variants:
                results[name].append(run_child(kind, data_dir, repeats, device, **shape, **options))
        seconds = {name: median_seconds(rs) for name, rs in results.items()}
        naive = seconds[variants[0][0]]
        rate = ' | fraction of fp32 matmul rate' if title.startswith('ProtoNet') else ''
        print(f'| variant | ms / step | peak RSS MB | vs naive{rate} |')
        print('|---|---|---|---|' + ('---|' if rate else ''))
        for name, rs in results.items():
            fraction = f' | {PROTONET_GFLOP / seconds[name] / peak:.2f}' if rate else ''
            print(f'| {name} | {1000 * seconds[name]:.1f} | {max(r["peak_mb"] for r in rs):.0f} | '
                  f'{naive / seconds[name]:.2f}x{fraction} |')
