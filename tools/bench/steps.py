"""Training steps with sampling, against the naive course pipeline: ProtoNet, MAML (loop
against vmap), and several CPU processes."""
from tools.bench.common import PROTONET_GFLOP, run_child


def bench_processes(data_dir, repeats):
    """1 process x 2 threads against 2 processes x 1 thread (torchrun, gloo) on this CPU."""
    print('\n## Several CPU processes: 16 tasks per step split over the processes (train step incl. sampling)\n')
    print('| configuration | 1 process x 2 threads: ms / step | 2 processes x 1 thread: ms / step | tasks / s, 1 x 2 '
          '| tasks / s, 2 x 1 | 2 x 1 vs 1 x 2 |')
    print('|---|---|---|---|---|---|')
    configs = [('ProtoNet 5w5s', 'protonet', dict(tasks_per_call=1)),
               ('MAML 5w1s, second-order, 1 step', 'maml', dict(inner_steps=1))]
    for name, kind, options in configs:
        one = run_child(kind, data_dir, repeats, 'cpu', **options)['seconds']
        two = run_child(kind, data_dir, repeats, 'cpu', processes=2, **options)['seconds']
        print(f'| {name} | {1000 * one:.1f} | {1000 * two:.1f} | {16 / one:.1f} | {16 / two:.1f} | {one / two:.2f}x |')


def bench_protonet(data_dir, repeats, device, peak):
    print('\n## ProtoNet, 5-way 5-shot, 15 queries, 16 tasks per step (train step incl. sampling)\n')
    print('| pipeline | ms / step | tasks / s | fraction of fp32 matmul rate | vs naive |')
    print('|---|---|---|---|---|')
    run = lambda kind, **options: run_child(kind, data_dir, repeats, device, **options)
    rows = [('naive: PNG DataLoader (2 workers) + per-task loop', run('protonet_naive'))]
    if device == 'cpu':
        rows += [('ours: per-task encoder calls, default allocator',
                  run('protonet', allocator='default', tasks_per_call=1)),
                 ('ours: per-task encoder calls, tuned allocator (default on CPU)', run('protonet', tasks_per_call=1)),
                 ('ours: one batched call of 16 tasks, tuned allocator', run('protonet', tasks_per_call=16))]
    else:
        rows += [('ours: per-task encoder calls', run('protonet', tasks_per_call=1)),
                 ('ours: one batched call of 16 tasks (default on a GPU)', run('protonet', tasks_per_call=16))]
    naive = rows[0][1]['seconds']
    for name, result in rows:
        s = result['seconds']
        print(f'| {name} | {1000 * s:.1f} | {16 / s:.1f} | {PROTONET_GFLOP / s / peak:.2f} | {naive / s:.2f}x |')


def bench_maml(data_dir, repeats, device):
    print('\n## MAML, 5-way 1-shot, 15 queries, 16 tasks per step (train step incl. sampling)\n')
    memory = 'peak GPU MB' if device == 'cuda' else 'peak RSS MB'  # as peak_memory_mb reads it
    print(f'| configuration | loop: ms / step | vmap: ms / step | vmap speed-up | loop: {memory} | vmap: {memory} |')
    print('|---|---|---|---|---|---|')
    configs = [('second-order, 1 step', dict(inner_steps=1)),
               ('second-order, 5 steps', dict(inner_steps=5)),
               ('first-order, 1 step', dict(inner_steps=1, first_order=1)),
               ('second-order, 1 step, learned inner LRs', dict(inner_steps=1, learn_inner_lrs=1))]
    for name, options in configs:
        loop = run_child('maml', data_dir, repeats, device, vmap='no', **options)
        vmap = run_child('maml', data_dir, repeats, device, vmap='yes', **options)
        print(f'| {name} | {1000 * loop["seconds"]:.1f} | {1000 * vmap["seconds"]:.1f} '
              f'| {loop["seconds"] / vmap["seconds"]:.2f}x | {loop["peak_mb"]:.0f} | {vmap["peak_mb"]:.0f} |')
