"""Short seeded training runs through the command-line entry points, and a
summary of the weights they end with: a sha256 per tensor (bit-for-bit
comparisons) and per-tensor statistics (round-off comparisons).

    PYTHONPATH=. python tests/programs/reference_runs.py DATA_ROOT tests/programs/reference_weights.json
    PYTHONPATH=. python tests/programs/reference_runs.py DATA_ROOT tests/programs/reference_weights.json --add_platform

(from the repository's root; after `pip install -e .`, without PYTHONPATH) records
the summary that tests/programs/test_reference.py compares every later version of the code
against (DATA_ROOT holds omniglot/ and metabolism/); with
--add_platform, only the sha256s of this platform are added to the file (for
bit-for-bit comparisons here), once the runs agree with the recorded summary
to round-off.
"""
import hashlib
import importlib
import json
import os
import sys
import tempfile

import torch
from fewshot import runtime
from fewshot.engine import checkpoints

SMALL = ['--num_train_iterations', '4', '--batch_size', '3', '--num_val_tasks', '3', '--seed', '3']
# the way these were recorded (a per-task loop, one backward per meta-batch, contiguous images),
# not chosen per machine
LOOP = ['--vmap_tasks', 'no', '--tasks_per_backward', '0']
CONTIGUOUS = ['--channels_last', 'no']  # on images
# name -> (script module, flags; the data folder is appended)
RUNS = {
    'protonet': ('protonet', [*SMALL, '--num_support', '2', '--num_query', '3', '--encoder_calls', 'per_task',
                              '--channels_last', 'no']),
    'maml_second_order_learned_lrs': ('maml', [*SMALL, *LOOP, *CONTIGUOUS, '--group_tasks', 'no', '--num_inner_steps',
                                               '2', '--learn_inner_lrs', '--num_query', '3']),
    'reptile': ('maml', [*SMALL, *LOOP, *CONTIGUOUS, '--algorithm', 'reptile', '--num_inner_steps', '3', '--inner_lr', '0.1',
                         '--num_query', '3']),
    'maml_sinusoid': ('maml', [*LOOP, '--dataset', 'sinusoid', '--num_train_iterations', '30',
                               '--num_val_tasks', '4']),
    'metabolism_maml': ('run_metabolism', [*SMALL, *LOOP, '--algorithm', 'maml', '--num_support', '3',
                                           '--num_query', '4', '--features', 'morgan']),
}


def data_flags(name, data_root):
    if name == 'maml_sinusoid':
        return []
    if name.startswith('metabolism'):
        return ['--datadir', os.path.join(data_root, 'metabolism')]
    return ['--data_dir', os.path.join(data_root, 'omniglot')]


def trained_tensors(learner_state):
    """{name: tensor} of what a run trains, from a checkpoint's 'learner' entry."""
    if 'network' in learner_state:  # ProtoNet
        return {k.replace('params.', ''): v for k, v in learner_state['network'].items()}
    tensors = dict(learner_state['meta_parameters'])
    tensors.update({f'inner_lr/{k}': v for k, v in learner_state.get('inner_lrs', {}).items()})
    return tensors


def summary(tensor):
    flat = tensor.detach().double().flatten()
    return {'sha256': hashlib.sha256(tensor.detach().contiguous().numpy().tobytes()).hexdigest(),
            'shape': list(tensor.shape), 'sum': flat.sum().item(), 'sum_sq': flat.square().sum().item(),
            'head': flat[:8].tolist()}


def run(name, data_root, log_dir):
    """Run one reference configuration into log_dir; return {tensor name: summary}."""
    module, flags = RUNS[name]
    script = importlib.import_module(module)
    script.main([*flags, *data_flags(name, data_root), '--log_dir', log_dir])
    steps = int(flags[flags.index('--num_train_iterations') + 1])
    checkpoint = checkpoints.read(os.path.join(log_dir, f'state{steps - 1}.pt'))
    return {k: summary(v) for k, v in trained_tensors(checkpoint['learner']).items()}


def platform():
    """What must match for bit-for-bit equality to be expected."""
    return {'torch': torch.__version__, 'cpu_capability': torch.backends.cpu.get_cpu_capability(),
            'threads': torch.get_num_threads(), 'cpu': runtime.cpu_name()}


def main():
    data_root, out = sys.argv[1:3]
    runs = {}
    for name in RUNS:
        with tempfile.TemporaryDirectory() as log_dir:
            runs[name] = run(name, data_root, log_dir)
    if '--add_platform' in sys.argv:
        with open(out) as f:
            results = json.load(f)
        hashes = {name: {k: v['sha256'] for k, v in tensors.items()} for name, tensors in runs.items()}
        results.setdefault('other_platforms', []).append({'platform': platform(), 'sha256': hashes})
    else:
        results = {'platform': platform(), 'runs': runs}
    with open(out, 'w') as f:
        json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
