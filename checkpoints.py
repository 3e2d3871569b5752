"""Checkpoints: `state{step}.pt` in the log dir, written atomically, holding

    step, learner (the learner's state()), optimizer (its state_dict()),
    optimizer_kind ('adam' or 'sgd'), rng (torch's and the sampler's),
    args (the run's flags), val_score, metric_kind ('accuracy' or 'loss').

Checkpoints in the older layout keep the optimizer's state inside `learner`
and some flags under older names; `load` translates them, so they resume and
test like the others.
"""
import glob
import os
import re

import numpy as np

import util

# flags renamed since older checkpoints were written: old name -> name now
RENAMED_FLAGS = {'outer_lr': 'learning_rate', 'datadir': 'data_dir'}
# flags that may change between a run and its resumption
RESUME_MAY_CHANGE = {'checkpoint_step', 'test', 'device', 'num_workers', 'log_dir', 'data_dir',
                     'num_train_iterations', 'num_test_tasks', 'vmap_tasks', 'channels_last', 'csv',
                     'support_sweep'}


def path(log_dir, step):
    return os.path.join(log_dir, f'state{step}.pt')


def saved_steps(log_dir):
    """Steps of the checkpoints in log_dir, ascending."""
    steps = [re.fullmatch(r'state(\d+)\.pt', os.path.basename(p)) for p in glob.glob(os.path.join(log_dir, 'state*.pt'))]
    return sorted(int(m.group(1)) for m in steps if m)


# what a checkpoint written before a flag existed was trained with (whatever today's default)
FLAGS_BEFORE_THEY_EXISTED = {'metabolism': {'features': 'morgan', 'validation_protocol': 'halves', 'dropout': 0.0,
                                            'label_order': 'random'}}


def translate(checkpoint):
    """A checkpoint in the current layout (older layouts are converted in place)."""
    learner = checkpoint['learner']
    if 'optimizer' in learner:  # written when the learner owned its (Adam) optimizer
        checkpoint['optimizer'] = learner.pop('optimizer')
        checkpoint['optimizer_kind'] = 'adam'
    checkpoint.setdefault('metric_kind', 'accuracy')
    args = checkpoint['args']
    if 'algorithm' not in args:  # protonet.py's older checkpoints
        args['algorithm'] = 'protonet' if 'network' in learner else 'maml'
    if 'dataset' not in args:  # only run_metabolism.py had --datadir
        args['dataset'] = 'metabolism' if 'datadir' in args else 'omniglot'
    for old, new in RENAMED_FLAGS.items():
        if old in args and new not in args:
            args[new] = args.pop(old)
    for flag, value in FLAGS_BEFORE_THEY_EXISTED.get(args['dataset'], {}).items():
        args.setdefault(flag, value)
    return checkpoint


def load(log_dir, step):
    """The checkpoint of a step, translated to the current layout; a UserError names a missing or bad file."""
    return translate(util.load_checkpoint(path(log_dir, step)))


def flags_of(log_dir, step=-1):
    """The flags of a step's checkpoint (-1: the newest) in log_dir, or {} if there is none."""
    steps = saved_steps(log_dir) if os.path.isdir(log_dir) else []
    if step < 0:
        return load(log_dir, steps[-1])['args'] if steps else {}
    return load(log_dir, step)['args'] if step in steps else {}


def best_step(log_dir):
    """The saved step with the best validation key metric, highest accuracy or lowest
    loss (latest among ties)."""
    steps = saved_steps(log_dir)
    if not steps:
        raise util.UserError(f'no checkpoints (state*.pt) in {log_dir}; train first or pass the right --log_dir')
    scores = []
    for step in steps:
        checkpoint = load(log_dir, step)
        sign = -1 if checkpoint['metric_kind'] == 'loss' else 1
        scores.append((sign * checkpoint.get('val_score', sign * -np.inf), step))
    return max(scores)[1]


def save(log_dir, step, learner, optimizer, generator, args, val_score):
    util.atomic_save({'step': step, 'learner': learner.state(), 'optimizer': optimizer.state_dict(),
                      'optimizer_kind': learner.optimizer, 'rng': util.rng_state(generator), 'args': vars(args),
                      'val_score': val_score, 'metric_kind': learner.task.metric_kind}, path(log_dir, step))


def check_settings(checkpoint, where, args):
    """Refuse, naming the flags, to resume a checkpoint with settings other than its own."""
    given = vars(args)
    changed = sorted(k for k, v in checkpoint['args'].items()
                     if k in given and k not in RESUME_MAY_CHANGE and given[k] != v)
    if changed:
        flags = ', '.join(f'--{k} {checkpoint["args"][k]} (now {given[k]})' for k in changed)
        raise util.UserError(f'resuming {where} with other settings: {flags}; pass the values it was trained with')


def resume(checkpoint, learner, optimizer, generator):
    """Load a checkpoint into the learner, optimizer and sampler generator; return the next step."""
    learner.load_state(checkpoint['learner'])
    if checkpoint['optimizer_kind'] == learner.optimizer:
        optimizer.load_state_dict(checkpoint['optimizer'])
    # else: an older Reptile checkpoint carries an unused Adam; Reptile's SGD keeps no state
    util.set_rng_state(checkpoint['rng'], generator)
    return checkpoint['step'] + 1
