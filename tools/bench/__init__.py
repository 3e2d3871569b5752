"""Speed and memory of the training steps, against the naive way, in one run (bench.py runs this).

    python bench.py --data_dir ./data            # everything, prints markdown tables
    python bench.py --data_dir ./data --only protonet
    python bench.py --data_dir ./data --device gpu --repeats 30   # the same on a GPU
    python bench.py --data_dir ./data --only processes            # 1 process x 2 threads vs 2 x 1 (CPU)
    python bench.py --data_dir ./data --only growth --plot docs/benchmark_growth.png   # cost vs N, K, steps, tasks
    python bench.py --data_dir ./data --only layout               # NCHW vs channels-last, op by op
    python bench.py --data_dir ./data --only group_tasks          # MAML's per-task loop vs grouped tasks
    python bench.py --data_dir ./data --only threads              # 1 and 2 threads, quiet and beside a busy process
    python bench.py --data_dir D/omniglot --only time_to_target --algorithms protonet --seeds 3
                                        # the course's default command against --fast, to the course's target

Each configuration runs in its own process (common.run_child). Timings are medians.
The parts: steps.py (training steps with sampling), compute.py (fixed tasks: MAML against
naive code and `higher`, memory, levers), layout.py, grouped.py, precision.py, growth.py, time_to_target.py
(whole commands to the course's targets; not in the default run: it takes hours); naive.py and
ours.py hold the timed children.
"""
import argparse
import json
import os

import torch

from fewshot import files, flags, runtime
from fewshot.errors import run_cli
from tools.bench import compute, grouped, growth, layout, naive, ours, precision, steps, threads, time_to_target
from tools.bench.common import matmul_gflops, peak_memory_mb

CHILDREN = {'protonet_naive': naive.child_protonet_naive, 'protonet': ours.child_protonet, 'maml': ours.child_maml,
            'maml_naive': naive.child_maml_naive, 'maml_higher': naive.child_maml_higher,
            'maml_fixed': ours.child_maml_fixed, 'protonet_fixed': ours.child_protonet_fixed,
            'protonet_naive_fixed': naive.child_protonet_naive_fixed, 'fast_step': threads.child_fast_step}


def main(argv=None):
    parser = flags.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data_dir', default=files.DATA_DIR, help='holds omniglot_resized.zip (the naive pipeline reads it)')
    parser.add_argument('--repeats', type=flags.positive_int, default=5)
    parser.add_argument('--only', choices=['protonet', 'maml', 'processes', 'maml_compute', 'maml_memory', 'levers',
                                           'bf16_gradients', 'growth', 'layout', 'group_tasks', 'time_to_target',
                                           'threads'])
    parser.add_argument('--plot', default=None, help='with growth: write its figure to this PNG file')
    parser.add_argument('--rounds', type=flags.positive_int, default=3, help='interleaved rounds (maml_compute)')
    parser.add_argument('--device', default='cpu', help='cpu, gpu, cuda, mps or auto, as in training')
    parser.add_argument('--algorithms', nargs='+', choices=list(time_to_target.TARGETS),
                        default=list(time_to_target.TARGETS), help='with time_to_target: whose target')
    parser.add_argument('--recipes', nargs='+', default=['default', 'fast'],
                        help="with time_to_target: 'default' (the course's command), 'fast' (--fast), or a "
                             "name with its flags, 'fast_bf16=--fast --precision bf16'")
    parser.add_argument('--seeds', type=flags.positive_int, default=3, help='with time_to_target: seeds per recipe')
    parser.add_argument('--child', choices=list(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument('--allocator', default='tuned', help=argparse.SUPPRESS)
    parser.add_argument('--tasks_per_call', type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument('--inner_steps', type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument('--first_order', type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument('--learn_inner_lrs', type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument('--vmap', default='no', help=argparse.SUPPRESS)
    parser.add_argument('--tasks', type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument('--way', type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument('--precision', default='fp32', help=argparse.SUPPRESS)
    parser.add_argument('--channels_last', choices=['auto', 'yes', 'no'], default='auto',
                        help=argparse.SUPPRESS)  # as in training; auto: the device's default (no timing here)
    parser.add_argument('--shot', type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument('--inner_lr', type=float, default=0.4, help=argparse.SUPPRESS)
    parser.add_argument('--tasks_per_backward', type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument('--algorithm', default='protonet', help=argparse.SUPPRESS)
    parser.add_argument('--threads', default='1', help=argparse.SUPPRESS)
    parser.add_argument('--tuning_cache', default=None, help=argparse.SUPPRESS)
    args = run_cli(lambda: parser.parse_args(argv))  # a bad flag: one line, exit 2
    device = runtime.resolve_device(args.device)
    if args.child:
        result = CHILDREN[args.child](args, device)
        result['peak_mb'] = peak_memory_mb(device)
        print(json.dumps(result))
        return
    if device.type == 'cpu':
        peak = matmul_gflops(device, 2048)
        where = f'{os.cpu_count()} CPU cores, {torch.get_num_threads()} threads'
    else:
        peak = matmul_gflops(device, 8192)
        where = f'{torch.cuda.get_device_name(device)}'
    print(f'# bench.py on {where}, torch {torch.__version__}; fp32 matmul: {peak:.0f} GFLOP/s')
    if args.only in (None, 'protonet'):
        steps.bench_protonet(args.data_dir, args.repeats, device.type, peak)
    if args.only in (None, 'maml'):
        steps.bench_maml(args.data_dir, args.repeats, device.type)
    if args.only in (None, 'processes') and device.type == 'cpu':
        steps.bench_processes(args.data_dir, args.repeats)
    if args.only in (None, 'maml_compute'):
        compute.bench_maml_compute(args.data_dir, args.repeats, device.type, args.rounds)
    if args.only in (None, 'maml_memory'):
        compute.bench_maml_memory(args.data_dir, args.repeats, device.type)
    if args.only in (None, 'levers'):
        compute.bench_levers(args.data_dir, args.repeats, device.type, args.rounds, peak)
    if args.only in (None, 'bf16_gradients'):
        precision.bench_bf16_gradients(args.data_dir, device)
    if args.only in (None, 'layout'):
        layout.bench_layout(max(args.repeats, 10), device.type)
    if args.only in (None, 'group_tasks'):
        grouped.bench_group_tasks(args.data_dir, args.repeats, device)
    if args.only in (None, 'growth'):
        growth.bench_growth(args.data_dir, args.repeats, device.type, args.plot)
    if args.only == 'threads' and device.type == 'cpu':
        threads.bench_threads(args.data_dir, args.repeats)
    if args.only == 'time_to_target':
        recipes = [(name, extra.split()) for name, _, extra in (r.partition('=') for r in args.recipes)]
        time_to_target.bench_time_to_target(args.data_dir, args.algorithms, recipes, args.seeds,
                                            f'{runtime.cpu_name()} ({where})')


if __name__ == '__main__':
    run_cli(main)
