"""Score a checkpoint on validation tasks of any shape: which model, step or shot a test
uses is chosen here, on the validation classes, never on the test classes.

    python -m tools.validate_checkpoint maml.py --log_dir D --checkpoint_step S --num_support 5 \\
        --num_val_tasks 600 --data_dir D/omniglot

After the program's name come its --test flags: the model is rebuilt as it was trained, and the
tasks take the trained N, K, Q and --batch_size unless given. The tasks are the validation split's,
drawn with the seed every validation uses, so the trained shape gives the run's own validation tasks.
Prints one line: the mean key metric and its 95% confidence interval.
"""
import importlib
import sys

from fewshot import cli, flags, runtime
from fewshot.engine import checkpoints, distributed, evaluation, runner
from fewshot.errors import UserError, run_cli

PROGRAMS = ('protonet.py', 'maml.py', 'run_metabolism.py')


def validation_line(command):
    """'validation accuracy over 600 5-way 5-shot tasks (...): mean M, 95% confidence interval C'."""
    args = command.args
    step = args.checkpoint_step if args.checkpoint_step >= 0 else checkpoints.best_step(command.log_dir)
    device = runtime.resolve_device(args.device)
    learner, _, trained = runner.trained_learner(command, step, device)
    tasks = flags.task_args(command, trained)
    if 'batch_size' not in command.given:  # tasks are drawn a meta-batch at a time: the run's batches
        tasks.batch_size = trained['batch_size']
    tasks.threads = runner.set_threads(tasks, distributed.ONE)
    tasks.num_val_tasks = tasks.num_test_tasks = args.num_val_tasks  # tasks_line counts num_test_tasks
    sampler = command.build_sampler('val', tasks, evaluation.VAL_SEED, device)
    with runtime.autocast(device, tasks.precision):
        metrics = evaluation.validate(learner, sampler, tasks)
    what = evaluation.tasks_line(tasks, tasks.num_support, sampler, learner.task)
    return (f'checkpoint step {step} of {command.log_dir}, {learner.key_metric} over {what}: '
            f'mean {metrics[learner.key_metric]:.4f}, 95% confidence interval {metrics["ci95"]:.4f}')


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in PROGRAMS:
        raise UserError(f'name the program first: python -m tools.validate_checkpoint {"|".join(PROGRAMS)} '
                        '--log_dir D [its --test flags]')
    program = importlib.import_module(argv[0][:-len('.py')])
    command = cli.parse(program.PROGRAM, ['--test', *argv[1:]], program.LEARNERS)
    print(validation_line(command), flush=True)


if __name__ == '__main__':
    run_cli(main)
