"""Checkpoints: `state{step}.pt` in the log dir, written atomically, holding

    step, learner (the learner's state()), optimizer (its state_dict()),
    optimizer_kind ('adam' or 'sgd'), rng (torch's and the sampler's),
    args (the run's flags), val_score, metric_kind ('accuracy' or 'loss').

Checkpoints in the older layout keep the optimizer's state inside `learner`
and may not name their algorithm and dataset; `load` translates them, so they
resume and test like the others (older flag spellings and flags newer than a
checkpoint are the flags' roles: engine/runner.py).
"""
import glob
import os
import re

import numpy as np
import torch

from fewshot import files, registry
from fewshot.errors import UserError


def path(log_dir, step):
    return os.path.join(log_dir, f'state{step}.pt')


def saved_steps(log_dir):
    """Steps of the checkpoints in log_dir, ascending."""
    steps = [re.fullmatch(r'state(\d+)\.pt', os.path.basename(p)) for p in glob.glob(os.path.join(log_dir, 'state*.pt'))]
    return sorted(int(m.group(1)) for m in steps if m)


def translate(checkpoint):
    """A checkpoint in the current layout (older layouts are converted in place)."""
    learner = checkpoint['learner']
    if 'optimizer' in learner:  # written when the learner owned its (Adam) optimizer
        checkpoint['optimizer'] = learner.pop('optimizer')
        checkpoint['optimizer_kind'] = 'adam'
    checkpoint.setdefault('metric_kind', 'accuracy')
    args = checkpoint['args']
    if 'algorithm' not in args or 'dataset' not in args:
        algorithm, dataset = registry.names_of_older(checkpoint)
        args.setdefault('algorithm', algorithm)
        args.setdefault('dataset', dataset)
    return checkpoint


def read(file, weights=True):
    """A checkpoint file onto the CPU, or a UserError naming the file. weights=False: its tensors
    memory-mapped, read from disk only when touched (for its flags and score)."""
    if not os.path.isfile(file):
        raise UserError(f'no checkpoint at {file}; check --log_dir and --checkpoint_step')
    try:
        return torch.load(file, map_location='cpu', weights_only=False, mmap=not weights)
    except Exception as error:  # a truncated or foreign file
        raise UserError(f'checkpoint {file} cannot be read ({type(error).__name__}); '
                        'delete it and resume from an earlier step') from None


def load(log_dir, step, weights=True):
    """The checkpoint of a step, translated to the current layout; a UserError names a missing or bad file.
    weights=False: its tensors left on disk, memory-mapped (read)."""
    return translate(read(path(log_dir, step), weights))


def flags_of(log_dir, step=-1):
    """The flags of a step's checkpoint (-1: the newest) in log_dir, or {} if there is none."""
    steps = saved_steps(log_dir) if os.path.isdir(log_dir) else []
    if step < 0:
        return load(log_dir, steps[-1], weights=False)['args'] if steps else {}
    return load(log_dir, step, weights=False)['args'] if step in steps else {}


def best_step(log_dir):
    """The saved step with the best validation key metric, highest accuracy or lowest
    loss (latest among ties); checkpoints without a finite score (a step saved on
    interruption, not validated) are not picked while a scored one exists."""
    steps = saved_steps(log_dir)
    if not steps:
        raise UserError(f'no checkpoints (state*.pt) in {log_dir}; train first or pass the right --log_dir')
    scores = []
    for step in steps:
        checkpoint = load(log_dir, step, weights=False)
        sign = -1 if checkpoint['metric_kind'] == 'loss' else 1
        score = checkpoint.get('val_score', -sign * np.inf)
        scores.append((sign * score if np.isfinite(score) else -np.inf, step))
    return max(scores)[1]


def rng_state(generator):
    """The random state a run needs to continue exactly: torch's and the sampler's."""
    state = {'torch': torch.get_rng_state(), 'sampler': generator.get_state()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state, generator):
    """Restore what rng_state saved."""
    torch.set_rng_state(state['torch'])
    generator.set_state(state['sampler'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def write(checkpoint, file):
    """torch.save a checkpoint to file atomically (files.atomic_write)."""
    files.atomic_write(file, lambda f: torch.save(checkpoint, f))


def save(log_dir, step, learner, optimizer, generator, args, val_score):
    """Write state{step}.pt; a failed write (a full disk) is one line naming the checkpoint kept."""
    try:
        write({'step': step, 'learner': learner.state(), 'optimizer': optimizer.state_dict(),
               'optimizer_kind': learner.optimizer, 'rng': rng_state(generator), 'args': vars(args),
               'val_score': val_score, 'metric_kind': learner.task.metric_kind}, path(log_dir, step))
    except (OSError, RuntimeError) as error:  # torch.save reports a full disk as a RuntimeError from an OSError
        cause = error if isinstance(error, OSError) else error.__cause__ or error.__context__
        if not isinstance(cause, OSError):
            raise
        reason = cause.strerror or str(cause)
        kept = [s for s in saved_steps(log_dir) if s < step]
        where = (f'the last complete checkpoint is {path(log_dir, kept[-1])}; free space and resume with '
                 f'--checkpoint_step {kept[-1]}') if kept else 'no checkpoint was complete; free space and start again'
        raise UserError(f'could not write {path(log_dir, step)} ({reason}); {where}') from None


def resume(checkpoint, learner, optimizer, generator):
    """Load a checkpoint into the learner, optimizer and sampler generator; return the next step."""
    learner.load_state(checkpoint['learner'])
    if checkpoint['optimizer_kind'] == learner.optimizer:
        optimizer.load_state_dict(checkpoint['optimizer'])
    # else: an older Reptile checkpoint carries an unused Adam; Reptile's SGD keeps no state
    set_rng_state(checkpoint['rng'], generator)
    return checkpoint['step'] + 1
