"""Checkpoints: `state{step}.pt` in the log dir, written atomically, holding

    step, learner (the learner's state()), optimizer (its state_dict()),
    optimizer_kind ('adam' or 'sgd'), rng (torch's and the sampler's),
    args (the run's flags), val_score, metric_kind ('accuracy' or 'loss'),
    checksum ('sha256:HEX' of all the above: contents_digest).

The checksum is written in the same atomic write as the rest and checked whenever
weights are loaded: a file whose bytes changed on disk or in a copy is refused
(DamagedCheckpoint), as is one that cannot be read at all (truncated, zeroed).
Checkpoints written before checksums load with a note that they carry none.

Checkpoints in the older layout keep the optimizer's state inside `learner`
and may not name their algorithm and dataset; `load` translates them, so they
resume and test like the others (older flag spellings and flags newer than a
checkpoint are the flags' roles: engine/runner.py).
"""
import glob
import hashlib
import os
import pickle
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


CHECKSUM = 'checksum'
_unchecked_said = set()  # the files without a checksum this process has said so of


class DamagedCheckpoint(UserError):
    """A checkpoint file that cannot be read, or whose contents do not match its checksum."""

    def __init__(self, file, reason):
        self.file, self.reason = file, reason
        super().__init__(f'checkpoint {file} {reason}; delete it or move it aside, and resume or test an earlier '
                         'step (--checkpoint_step)')


def _feed(digest, value):
    """Add one value of a checkpoint (nested dicts, lists, tensors, arrays, scalars) to a hash,
    with its type and shape, so that no two different contents feed the same bytes."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f'tensor:{value.dtype}:{tuple(value.shape)};'.encode())
        digest.update(tensor.view(torch.uint8).numpy())
    elif isinstance(value, np.ndarray) and value.dtype != object:
        digest.update(f'array:{value.dtype.str}:{value.shape};'.encode())
        digest.update(np.ascontiguousarray(value).view(np.uint8).reshape(-1))
    elif isinstance(value, dict):
        digest.update(f'dict:{len(value)};'.encode())
        for key, item in value.items():  # a pickled dict keeps its order
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(f'{type(value).__name__}:{len(value)};'.encode())
        for item in value:
            _feed(digest, item)
    elif value is None or isinstance(value, (bool, int, float, str, bytes, np.generic)):
        digest.update(f'{type(value).__name__}:{value!r};'.encode())
    else:
        digest.update(f'pickle:{type(value).__qualname__};'.encode() + pickle.dumps(value, protocol=4))


def contents_digest(checkpoint):
    """'sha256:HEX' of a checkpoint's contents (its values, not its file's layout)."""
    digest = hashlib.sha256()
    _feed(digest, checkpoint)
    return f'sha256:{digest.hexdigest()}'


def verify(checkpoint, file):
    """The checkpoint without its checksum, after checking it; DamagedCheckpoint if it does not
    match. One without a checksum (written before checksums) is returned with a note, once a file."""
    if not isinstance(checkpoint, dict) or CHECKSUM not in checkpoint:
        if file not in _unchecked_said:
            _unchecked_said.add(file)
            print(f'note: {file} carries no checksum (written by an older version): its contents are not checked',
                  flush=True)
        return checkpoint
    written = checkpoint.pop(CHECKSUM)
    if contents_digest(checkpoint) != written:
        raise DamagedCheckpoint(file, 'is damaged (its contents do not match the checksum written with it)')
    return checkpoint


def read(file, weights=True):
    """A checkpoint file onto the CPU, checked against its checksum, or a UserError naming the file
    (DamagedCheckpoint: unreadable or changed). weights=False: its tensors memory-mapped, read from
    disk only when touched, and not checked (for its flags and score; what loads weights checks)."""
    if not os.path.isfile(file):
        raise UserError(f'no checkpoint at {file}; check --log_dir and --checkpoint_step')
    try:
        checkpoint = torch.load(file, map_location='cpu', weights_only=False, mmap=not weights)
    except Exception as error:  # a truncated, zeroed or foreign file
        raise DamagedCheckpoint(file, f'cannot be read ({type(error).__name__}): it is truncated or damaged') from None
    if weights:
        return verify(checkpoint, file)
    if isinstance(checkpoint, dict):
        checkpoint.pop(CHECKSUM, None)
    return checkpoint


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
    """torch.save a checkpoint with its checksum (contents_digest) to file atomically (files.atomic_write)."""
    checked = {**checkpoint, CHECKSUM: contents_digest(checkpoint)}
    files.atomic_write(file, lambda f: torch.save(checked, f))


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


def initialise(learner, args):
    """Load the weights of checkpoint args.init_from (a state*.pt file, or a log dir: its best step)
    into a learner about to train, which must be of the same algorithm, dataset and tensor shapes
    (else a UserError naming what differs). Inner learning rates are the checkpoint's only where
    both runs learn them; else this run's --inner_lr. Returns the file read."""
    source = args.init_from
    if not os.path.exists(source) or os.path.isdir(source) and not saved_steps(source):
        raise UserError(f'--init_from {source}: no such file, or a folder without checkpoints (state*.pt); give '
                        'a checkpoint or the log dir of a run that has saved one')
    file = path(source, best_step(source)) if os.path.isdir(source) else source
    checkpoint = translate(read(file))
    written = (checkpoint['args'].get('algorithm'), checkpoint['args'].get('dataset'))
    if written != (args.algorithm, args.dataset):
        raise UserError(f'--init_from {file} was written by {written[0]} on {written[1]} tasks, not {args.algorithm} '
                        f'on {args.dataset}; give a checkpoint of this algorithm and dataset')
    state = checkpoint['learner']
    both_learn = checkpoint['args'].get('learn_inner_lrs') and getattr(args, 'learn_inner_lrs', False)
    if 'inner_lrs' in state and not both_learn:  # fixed inner learning rates: this run's --inner_lr
        state = {**state, 'inner_lrs': learner.state()['inner_lrs']}
    theirs, ours = tensor_shapes(state), tensor_shapes(learner.state())
    differ = sorted(name for name in theirs.keys() | ours.keys() if theirs.get(name) != ours.get(name))
    if differ:
        raise UserError(f"--init_from {file}: its weights do not fit this run's network ({', '.join(differ[:3])} "
                        'differ); train with the network flags it was trained with')
    learner.load_state(state)
    return file


def tensor_shapes(state, prefix=''):
    """{'meta_parameters/conv0': (64, 1, 3, 3), ...}: the shape of every tensor in a nested learner state."""
    if isinstance(state, torch.Tensor):
        return {prefix: tuple(state.shape)}
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return {}
    shapes = {}
    for key, value in items:
        shapes.update(tensor_shapes(value, f'{prefix}/{key}' if prefix else str(key)))
    return shapes
