"""Run a parsed command (command.Command, which builds the learner and samplers): train,
resuming if asked, or test a checkpoint.

At --test the model is rebuilt with the flags it was trained with and the test
tasks are drawn with the command line's, as each flag's `at_test` role says
(flags.py); a resumed run must keep its trained settings but those whose
`resume_may_change` role allows another value.
"""
import argparse
import contextlib
import os
import signal

from fewshot import files, flags, runtime
from fewshot.command import Command
from fewshot.engine import checkpoints, distributed, evaluation, faults, loop, tuning


FINISHED = 'finished'
DAMAGED_SUFFIX = '.damaged'


def step_to_continue(command, says=True):
    """Where a training command goes on in a log dir that already holds checkpoints (and no
    --checkpoint_step): (the latest step, its checkpoint) when its run had these settings,
    (FINISHED, None) when that run has ended (says: print which); a run of other settings is
    refused in one line. (None, None): nothing to continue."""
    log_dir, args = command.log_dir, command.args
    steps = checkpoints.saved_steps(log_dir) if os.path.isdir(log_dir) else []
    if not steps:
        return None, None
    latest, checkpoint = newest_intact(log_dir, steps, says)
    changed = flags.changed_settings(command, flags.recorded(command, checkpoint))
    if changed:
        raise flags.UserError(f'{log_dir} holds another run (its latest checkpoint, {checkpoints.path(log_dir, latest)}, '
                              f'was trained with {changed}); resume it with --checkpoint_step {latest} and its '
                              'settings, or choose another --log_dir')
    reached = loop.reached_target(args, checkpoint['val_score'])
    finished = latest >= args.num_train_iterations - 1 or reached
    if says and finished:
        how = f'reached --target_accuracy {args.target_accuracy}' if reached else 'has finished'
        print(f'the run in {log_dir} {how} ({checkpoints.path(log_dir, latest)}); test it with --test, or train on '
              f'with a larger {"--target_accuracy" if reached else "--num_train_iterations"}')
    elif says:
        print(f'resuming from {checkpoints.path(log_dir, latest)}: {log_dir} holds a run with these settings '
              '(to start anew, choose another --log_dir)')
    return (FINISHED, None) if finished else (latest, checkpoint)


def newest_intact(log_dir, steps, main=True):
    """(step, checkpoint) of the newest of the steps whose checkpoint reads and matches its checksum.
    main (rank 0): move each damaged one passed over aside (to state{step}.pt.damaged, so that no
    later run or test picks it) and say so. None intact: a UserError naming them."""
    damaged = []
    for step in reversed(steps):
        file = checkpoints.path(log_dir, step)
        if not os.path.exists(file):  # moved aside by rank 0 meanwhile
            continue
        try:
            return step, checkpoints.load(log_dir, step)
        except checkpoints.DamagedCheckpoint as error:
            damaged.append(os.path.basename(file))
            if main:
                os.replace(file, file + DAMAGED_SUFFIX)
                print(f'not resuming from {file}: it {error.reason}; moved it to {file + DAMAGED_SUFFIX}',
                      flush=True)
    raise flags.UserError(f'no intact checkpoint in {log_dir} ({", ".join(damaged)} damaged or unreadable'
                          f'{", moved aside to *" + DAMAGED_SUFFIX if main else ""}); train anew or choose another '
                          '--log_dir')


def run(command: Command):
    """Train or test as the (parsed and checked) command says. Returns test results, or None."""
    args, log_dir = command.args, command.log_dir
    processes = distributed.start(runtime.resolve_device(args.device))
    if args.batch_size < processes.size:
        raise flags.UserError(f'--batch_size {args.batch_size} is smaller than the {processes.size} processes; '
                              'give each process at least one task')
    created = check_outputs(args, log_dir) if processes.is_main else []
    if processes.device.type == 'cpu':
        runtime.tune_cpu_allocator()
    writes = not args.test and processes.is_main
    try:
        with runtime.autocast(processes.device, args.precision), \
                (faults.LogDirLock(log_dir) if writes else contextlib.nullcontext()):
            results = test(command, processes) if args.test else train(command, processes)
    except BaseException as error:
        files.remove_if_empty(created)  # a run that failed before writing anything leaves no empty log dir
        if isinstance(error, SystemExit):  # stopped by a signal after finishing: saved, its status kept
            processes.leave(error.code)
        if isinstance(error, flags.UserError) and not processes.is_main:
            raise SystemExit(2) from None  # rank 0 says why
        raise
    processes.leave(0)
    return results


def test(command, processes):
    """Test a checkpoint (the best validation one unless --checkpoint_step): the benchmark the
    dataset offers, else sampled tasks (a K sweep with several --num_support)."""
    args, log_dir = command.args, command.log_dir
    step = args.checkpoint_step if args.checkpoint_step >= 0 else checkpoints.best_step(log_dir)
    learner, checkpoint, trained = trained_learner(command, step, processes.device, says=processes.is_main)
    if args.checkpoint_step < 0 and processes.is_main:
        print(f'testing checkpoint step {step}, the best validation {learner.key_metric} '
              f'({checkpoint["val_score"]:.4f}) in {log_dir}')
    tasks_flags = flags.task_args(command, trained)
    tasks_flags.threads = set_threads(tasks_flags, processes)
    results = command.dataset.benchmark_test(learner, tasks_flags, log_dir, processes)
    if results is None:
        results = evaluation.test_support_sweep(learner, command.build_sampler, tasks_flags, processes, log_dir, step)
    if processes.is_main:
        command.dataset.after_test(learner, args, log_dir)
    processes.finish()
    return results


def trained_learner(command, step, device, says=False):
    """The learner of checkpoint `step` in command.log_dir, rebuilt with the flags it was trained
    with (model_args) on device: (learner, checkpoint, the trained flags). says: print its notice."""
    checkpoint = checkpoints.load(command.log_dir, step)
    trained = flags.recorded(command, checkpoint)
    learner = command.build_learner(flags.model_args(command, trained), device)
    if says:
        say_notice(learner)
    learner.load_state(checkpoint['learner'])
    return learner, checkpoint, trained


def say_notice(learner):
    """Print the learner's start-up line (contracts.Learner.notice), if it has one."""
    if getattr(learner, 'notice', None):
        print(learner.notice, flush=True)


def train(command, processes):
    """Train from scratch, or resume --checkpoint_step (read and checked before any work), or
    continue the run of these settings the log dir holds. SIGINT and SIGTERM stop it after the
    step in progress, saved: SystemExit with the signal's status. A non-finite loss or gradient
    stops it before that step is applied, in one line."""
    args, log_dir = command.args, command.log_dir
    if args.checkpoint_step >= 0:
        step, resumed = args.checkpoint_step, checkpoints.load(log_dir, args.checkpoint_step)
    else:
        step, resumed = step_to_continue(command, processes.is_main)
    if step == FINISHED:
        processes.finish()
        return None
    if resumed is not None:
        flags.check_resume_settings(command, flags.recorded(command, resumed), checkpoints.path(log_dir, step))
    interruption = faults.Interruption()  # a signal during the set-up stops the run after its first step
    try:
        with interruption.installed():
            stopped = set_up_and_train(command, processes, resumed, interruption)
    except loop.NonFinite as error:
        raise flags.UserError(diverged_line(error, log_dir)) from None
    processes.finish()
    if stopped is not None:
        if processes.is_main:
            print(f'interrupted at step {stopped}; saved state{stopped}.pt; resume with: '
                  f'{command.resume_line(stopped)}', flush=True)
        raise SystemExit(128 + (interruption.signal or signal.SIGTERM))


def set_up_and_train(command, processes, resumed, interruption):
    """Build the learner, optimizer and samplers, resume them if asked, choose the fastest way to
    compute a step, then loop.train. Returns the step interrupted at, or None."""
    args, log_dir, device = command.args, command.log_dir, processes.device
    recorded = argparse.Namespace(**{**vars(args), 'threads': set_threads(args, processes)})  # what checkpoints keep
    runtime.seed_everything(args.seed)
    learner = command.build_learner(args, device)
    if resumed is None and args.init_from is not None:
        source = checkpoints.initialise(learner, args)
        if processes.is_main:
            print(f'starting from the weights of {source}', flush=True)
    if processes.is_main:
        say_notice(learner)
    optimizer = loop.build_optimizer(learner, args.learning_rate, args.weight_decay)
    train_sampler = command.build_sampler('train', args, args.seed, device)
    val_sampler = command.build_sampler('val', args, evaluation.VAL_SEED, device)
    start = 0 if resumed is None else checkpoints.resume(resumed, learner, optimizer, train_sampler.generator)
    if processes.size == 1:  # the fastest way to compute a step on this machine (the same numbers)
        tune_tasks = command.build_sampler('train', args, tuning.TUNE_SEED, device)
        tuning.choose(learner, lambda: tune_tasks.sample(args.batch_size), tuning.run_key(command, device),
                      forcing=flags.left_to_tuning(command))
    if processes.is_main:
        print(f'logging to {log_dir}' + (f' ({processes.size} processes)' if processes.size > 1 else ''))
    return loop.train(learner, optimizer, train_sampler, val_sampler, recorded, log_dir, start, processes,
                      interruption)


def set_threads(args, processes):
    """Set torch's CPU threads as --threads says (runtime.choose_threads) and say so (rank 0): the
    count, which checkpoints record (a resumed run keeps it), or args.threads off a CPU."""
    if processes.device.type != 'cpu':
        return args.threads
    count, why = runtime.choose_threads(args.threads)
    if processes.is_main and args.threads == 'auto':
        print(f'threads: {count} ({why}); --threads N fixes the count', flush=True)
    return count


def diverged_line(error, log_dir):
    """One line on a run stopped by a non-finite loss or gradient: the step, the quantity, the fix,
    and the checkpoint to go on from (all checkpoints on disk hold finite weights)."""
    kept = checkpoints.saved_steps(log_dir)
    where = (f'the latest checkpoint, {checkpoints.path(log_dir, kept[-1])}, holds finite weights'
             if kept else 'no checkpoint was written')
    return (f'{error}: the run stopped before applying it ({where}); lower --learning_rate (or --inner_lr, '
            'the inner loop\'s), then start again or resume an earlier checkpoint with --checkpoint_step')


def check_outputs(args, log_dir):
    """--csv and, to train, --log_dir can be written; stray temporaries of killed saves removed.
    Returns the folders it created."""
    if args.csv:
        files.writable_file(args.csv, '--csv')
    if args.test:
        return []
    created = files.writable_folder(log_dir, '--log_dir')
    count, size = files.remove_stale_temporaries(log_dir)
    if count:
        print(f'removed {count} temporary checkpoint file(s) ({size / 2 ** 20:.1f} MiB) that runs stopped '
              f'while saving had left in {log_dir}')
    return created
