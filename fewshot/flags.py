"""Every flag is declared once, here or beside the dataset or algorithm that owns it, with
its roles: what the default log dir, --test, a resumed run, the tuning cache and older
checkpoints do with it. The code that needs a role asks the declarations.

    Flag('--num_way', type=positive_int, default=5, help='classes per task (N)')
    Flag('--features', default='morgan_counts', log_name=True, at_test=TASKS, before_it_existed='morgan')
"""
import argparse
import difflib
import math

from fewshot import files
from fewshot.errors import UserError

# What --test does with a flag (at_test):
MODEL = 'model'          # the model is rebuilt with its trained value; the test tasks do not read it
SHAPE = 'shape'          # the model keeps its trained value; the test tasks take it too unless given at --test
                         # (a model trained 5-way 5-shot is tested 5-way 5-shot; --num_support 1 tests it 1-shot)
TASKS = 'tasks'          # the trained value for the test tasks too: it says which tasks the model learned
TEST_TIME = 'test_time'  # the trained value, for the model and the test tasks, unless given at --test
RECORDED = 'recorded'    # the run's recorded value unless given, at --test and at resume (where the data is)
NOT_RECORDED = object()  # before_it_existed: checkpoints without the flag take the command line's value


class Flag:
    """One flag: its spellings, argparse's keywords and its roles.

    names: '--num_way' first; older spellings after it ('--outer_lr'), which older
        checkpoints also use for the flag.
    log_name: named '.dest_value' in the default log dir when not at its default.
    task_name: the word of the flag in the task part of every default log dir ('way': 'way_5').
    execution: it picks one of the ways to compute the same numbers, which 'auto' leaves to tuning.
    at_test: MODEL, TASKS, TEST_TIME or RECORDED (above).
    resume_may_change: a resumed run may take another value; else it must keep the trained one.
    shapes_step: part of the tuning cache key (it may change which way to compute a step is fastest).
    before_it_existed: the value of checkpoints written before the flag existed.
    group: its section of --help (HELP_GROUPS); None: from its roles and owner (help_group).
    """

    def __init__(self, *names, log_name=False, task_name=None, execution=False, at_test=MODEL,
                 resume_may_change=False, shapes_step=True, before_it_existed=NOT_RECORDED, group=None,
                 **argparse_options):
        self.names, self.options, self.group = names, argparse_options, group
        self.dest = argparse_options.get('dest') or names[0].lstrip('-')
        self.log_name, self.task_name, self.execution, self.at_test = log_name, task_name, execution, at_test
        self.resume_may_change = resume_may_change or at_test == RECORDED
        self.shapes_step, self.before_it_existed = shapes_step, before_it_existed

    @property
    def older_names(self):
        return [name.lstrip('-') for name in self.names[1:]]

    def add_to(self, parser):
        parser.add_argument(*self.names, **self.options)


# --help's sections, in order; ALGORITHM is the algorithm's own
DATA, TASK, TRAINING, ALGORITHM, EXECUTION, TEST = 'data', 'task', 'training', 'algorithm', 'execution', 'test'
HELP_GROUPS = {
    DATA: 'data (where the examples come from, and which classes each split holds)',
    TASK: 'task (the N-way K-shot tasks)',
    TRAINING: 'training (the meta-updates, validation and checkpoints)',
    ALGORITHM: '{algorithm} (its own flags)',
    EXECUTION: 'execution (where and how a step is computed: the same numbers, but for --precision)',
    TEST: 'test (--test and what it reports)',
}


def help_group(flag, owner):
    """A flag's --help section: its own group, else EXECUTION for flags that pick a way to
    compute, ALGORITHM or DATA by its owner ('algorithm', 'dataset' or 'common'), else TRAINING."""
    if flag.group:
        return flag.group
    if flag.execution:
        return EXECUTION
    return {'algorithm': ALGORITHM, 'dataset': DATA}.get(owner, TRAINING)


# ---------------------------------------------------------------- what the roles do
# command: a command.Command (its flags {dest: Flag}, args, given); trained: a checkpoint's flags

def recorded(command, checkpoint):
    """The flags a checkpoint was trained with, older spellings renamed and flags newer than it
    set to their before_it_existed values."""
    trained = dict(checkpoint['args'])
    for old, dest in older_names(command.flags.values()).items():
        if old in trained and dest not in trained:
            trained[dest] = trained.pop(old)
    for dest, flag in command.flags.items():
        if dest not in trained and flag.before_it_existed is not NOT_RECORDED:
            trained[dest] = flag.before_it_existed
    return trained


def model_args(command, trained):
    """The flags --test rebuilds the model with: the trained ones, flags newer than the checkpoint
    at the command line's value, and TEST_TIME flags given on the command line replacing them."""
    given = vars(command.args)
    merged = {**given, **trained}
    merged.update({dest: given[dest] for dest, flag in command.flags.items()
                   if flag.at_test == TEST_TIME and dest in command.given})
    return argparse.Namespace(**merged)


def task_args(command, trained):
    """The flags --test draws its tasks with: the command line's, but TASKS flags as trained and
    SHAPE, TEST_TIME and RECORDED flags as trained unless given; support_sweep: the K to test
    (the trained K unless --num_support is given)."""
    merged = dict(vars(command.args))
    for dest, flag in command.flags.items():
        unless_given = flag.at_test in (SHAPE, TEST_TIME, RECORDED) and dest not in command.given
        if (flag.at_test == TASKS or unless_given) and dest in trained:
            merged[dest] = trained[dest]
    if 'num_support' not in command.given and 'num_support' in trained:
        shot = trained['num_support']
        merged['num_support'] = shot[0] if isinstance(shot, list) else shot
        merged['support_sweep'] = [merged['num_support']]
    return argparse.Namespace(**merged)


def changed_settings(command, trained):
    """'--flag trained (now given), ...' of the flags a resumed run may not change, or ''."""
    given = vars(command.args)
    changed = sorted(dest for dest, flag in command.flags.items()
                     if not flag.resume_may_change and dest in trained and given[dest] != trained[dest])
    return ', '.join(f'--{k} {trained[k]} (now {given[k]})' for k in changed)


def check_resume_settings(command, trained, where):
    """Refuse, naming the flags, to resume a checkpoint with settings other than its own; RECORDED
    flags not given take the checkpoint's value."""
    for dest, flag in command.flags.items():
        if flag.at_test == RECORDED and dest not in command.given and dest in trained:
            setattr(command.args, dest, trained[dest])
    changed = changed_settings(command, trained)
    if changed:
        raise UserError(f'resuming {where} with other settings: {changed}; pass the values it was trained with')


# ---------------------------------------------------------------- argparse types
# a bad value fails while parsing, naming the flag, before any work

def _number(text, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not {"an integer" if kind is int else "a number"}') from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f'{text} is not a finite number')
    return value


def _flag_type(kind, accept, problem):
    """An argparse type: text -> a finite kind (int or float) for which accept(value) holds,
    else the one-line error f'{value}{problem}'."""
    def parse(text):
        value = _number(text, kind)
        if not accept(value):
            raise argparse.ArgumentTypeError(f'{value}{problem}')
        return value
    return parse


positive_int = _flag_type(int, lambda v: v >= 1, ' is not a positive integer (1 or more)')
non_negative_int = _flag_type(int, lambda v: v >= 0, ' is below 0')
checkpoint_step = _flag_type(int, lambda v: v >= -1, ': give a saved step, or -1')
seed = _flag_type(int, lambda v: 0 <= v < 2 ** 32, ' is outside 0 .. 2**32 - 1')
positive_float = _flag_type(float, lambda v: v > 0, ' is not positive')
non_negative_float = _flag_type(float, lambda v: v >= 0, ' is negative')
probability = _flag_type(float, lambda v: 0 <= v < 1, ' is not in [0, 1)')
fraction = _flag_type(float, lambda v: 0 < v <= 1, ' is not in (0, 1]')

AUTO_YES_NO = ('auto', 'yes', 'no')


def thread_count(text):
    """An argparse type: 'auto' or a positive number of threads."""
    return text if text == 'auto' else positive_int(text)


def auto_yes_no(value):
    """An auto/yes/no flag's value as code takes it: None (auto: measured), True or False."""
    return {'auto': None, 'yes': True, 'no': False}[value]


# ---------------------------------------------------------------- the flags every run has

COMMON = (
    Flag('--log_dir', type=str, default=None, resume_may_change=True, shapes_step=False,
         help='directory for logs and checkpoints; default: named from the settings under ./logs'),
    Flag('--data_dir', '--datadir', dest='data_dir', type=str, default=files.DATA_DIR, at_test=RECORDED, shapes_step=False,
         group=DATA,
         help='folder with the data set (--datadir is the same flag; at --test and resume: the run\'s unless given)'),
    Flag('--num_way', type=positive_int, default=5, task_name='way', at_test=SHAPE, group=TASK,
         help='classes per task (N; at --test: the trained N unless given)'),
    Flag('--num_support', type=positive_int, nargs='+', default=[1], task_name='support', at_test=SHAPE, group=TASK,
         help='support examples per class (K); at --test: the trained K unless given, and several values sweep K'),
    Flag('--num_query', type=positive_int, default=15, task_name='query', at_test=SHAPE, group=TASK,
         help='query examples per class (Q; at --test: the trained Q unless given)'),
    Flag('--train_num_way', type=positive_int, default=None, log_name=True, before_it_existed=None, group=TASK,
         help='classes per training task (Snell et al. train wider than they test); validation and test tasks '
              'keep --num_way; default: --num_way'),
    Flag('--train_num_query', type=positive_int, default=None, log_name=True, before_it_existed=None, group=TASK,
         help='query examples per class in training tasks; validation and test tasks keep --num_query; '
              'default: --num_query'),
    Flag('--batch_size', type=positive_int, default=16, help='tasks per meta-batch (B)'),
    Flag('--learning_rate', '--outer_lr', dest='learning_rate', type=positive_float, default=0.001,
         help='learning rate of the meta-update (--outer_lr is the same flag): Adam for ProtoNet and MAML, '
              'the initial meta step size for Reptile'),
    Flag('--lr_halving_steps', type=non_negative_int, default=0, log_name=True,
         help='halve the learning rate every this many steps (Snell et al.: 2000); 0: never'),
    Flag('--tasks_per_backward', type=non_negative_int, default=None, group=EXECUTION,
         help="tasks per backward pass within a meta-batch: holds one group's graph at a time (second-order "
              "MAML's memory), same gradient; 0: the whole meta-batch at once; default: the learner's "
              '(1 for a per-task MAML loop, else 0)'),
    Flag('--weight_decay', type=non_negative_float, default=0.0, log_name=True,
         help="L2 penalty of the meta-update (the optimizer's weight_decay); 0: none"),
    Flag('--num_train_iterations', type=positive_int, default=5000, resume_may_change=True, shapes_step=False,
         help='meta-updates in the whole run'),
    Flag('--test', default=False, action='store_true', resume_may_change=True, shapes_step=False, group=TEST,
         help='test a checkpoint instead of training'),
    Flag('--checkpoint_step', type=checkpoint_step, default=-1, resume_may_change=True, shapes_step=False, group=TEST,
         help='checkpoint to resume from or test; -1: train from scratch, or test the best'),
    Flag('--num_test_tasks', type=positive_int, default=600, resume_may_change=True, shapes_step=False, group=TEST,
         help='tasks evaluated by --test'),
    Flag('--csv', type=str, default=None, resume_may_change=True, shapes_step=False, group=TEST,
         help='with --test: also append the results to this CSV file'),
    Flag('--init_from', type=str, default=None, metavar='CHECKPOINT', shapes_step=False, before_it_existed=None,
         help='start training from the weights of this checkpoint (a state*.pt file, or a log dir: its best '
              'step) instead of a random initialisation, with a fresh optimizer and step count; the '
              "algorithm, dataset and network must be the same (MAML's inner learning rates: the checkpoint's "
              'where both runs learn them, else --inner_lr)'),
    Flag('--num_val_tasks', type=positive_int, default=64, shapes_step=False, help='tasks at each validation'),
    Flag('--val_interval', type=positive_int, default=50, resume_may_change=True, shapes_step=False,
         before_it_existed=50, help='validate every this many steps (and at the last)'),
    Flag('--device', type=str, default='cpu', at_test=TEST_TIME, resume_may_change=True, group=EXECUTION,
         help='cpu, gpu (CUDA, else MPS), cuda, mps or auto'),
    Flag('--threads', type=thread_count, default='auto', at_test=RECORDED, shapes_step=False, group=EXECUTION,
         metavar='N|auto',
         help="torch's threads on a CPU; auto: OMP_NUM_THREADS where set, else the cores other processes leave "
              'free when the run starts (a thread sharing its core with a busy process slows every step many '
              'times over). The count is recorded, and a resumed run or --test keeps it unless given: results '
              'are bit for bit the same at the same count'),
    Flag('--num_workers', type=non_negative_int, default=2, resume_may_change=True, shapes_step=False, group=EXECUTION,
         help="the course's flag, accepted and unused: tasks are drawn from an in-memory array"),
    Flag('--seed', type=seed, default=0, shapes_step=False, help='seeds initialisation and task sampling'),
    Flag('--target_accuracy', type=fraction, default=None, resume_may_change=True, shapes_step=False,
         help='stop training at the first validation at or above this accuracy, saving that step (the one --test '
              'then picks) and printing the wall time since the command started; classification only'),
    Flag('--target_tasks', type=positive_int, default=600, resume_may_change=True, shapes_step=False,
         before_it_existed=0, help='a validation at or above --target_accuracy is redone on this many other '
                                    'validation tasks, which must reach it too (a mean over --num_val_tasks, '
                                    'checked again and again, passes by luck now and then)'),
    Flag('--precision', choices=['fp32', 'bf16', 'auto'], default='fp32', group=EXECUTION,
         help='bf16: convolutions and matrix products in bfloat16 (torch.autocast), on GPUs and on CPUs with '
              'AVX512-BF16 or AMX; parameters, optimizer and losses stay float32; auto: bf16 where the device '
              'has it natively, else fp32'),
)


def fast_flag(recipe):
    """--fast, for a run whose dataset has a recipe for its algorithm ({dest: value}): its help lists the recipe."""
    settings = ' '.join(f'--{dest}' if value is True else f'--{dest} {value}' for dest, value in recipe.items())
    return Flag('--fast', default=False, action='store_true', log_name=True, shapes_step=False,
                before_it_existed=False,
                help="train with the recipe that reached the course's validation target in the least wall time "
                     f'measured on a 2-core CPU (docs/benchmarks.md): {settings}; flags given override it')


IMAGE_FLAGS = (  # the flags of datasets whose examples are images for a conv net
    Flag('--channels_last', choices=AUTO_YES_NO, default='auto', execution=True, at_test=TEST_TIME,
         resume_may_change=True,
         help='give the conv net its images channels-last (same numbers to round-off); auto: the faster on this '
              'machine, timed once at the start of training and cached (at --test and under torchrun: yes on '
              'a CPU, no on a GPU)'),
)


def check_common(args):
    """Check the shared flags together, once after parsing (their types checked each one):
    --num_support becomes one int (the first value) and args.support_sweep the list of
    values (a K sweep at --test)."""
    sweep = args.num_support
    if len(sweep) > 1 and not args.test:
        raise UserError('--num_support takes several values only with --test (a sweep over K); give one to train')
    args.num_support, args.support_sweep = sweep[0], sweep


# ---------------------------------------------------------------- parsing

class HelpWithDefaults(argparse.HelpFormatter):
    """--help with each flag's default, where it has one (not None, not an off switch)."""

    def _get_help_string(self, action):
        text = action.help or ''
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS or not action.option_strings or '%(default)' in text:
            return text
        return text + ' (default: %(default)s)'


class ArgumentParser(argparse.ArgumentParser):
    """argparse that takes no abbreviation of a flag, whose errors are one line (a UserError) naming
    the flag (and the closest real one to an unknown flag), without the usage block, and whose
    --help shows each flag's default."""

    def __init__(self, **options):
        super().__init__(**{'formatter_class': HelpWithDefaults, 'allow_abbrev': False, **options})

    def error(self, message):
        if message.startswith('unrecognized arguments: '):
            message = unknown_flag_line(self, message.split(': ', 1)[1].split())
        raise UserError(f'{message}; see {self.prog} --help')


def closest_flags(parser, typed):
    """The parser's flags that typed ('--lr') begins or resembles, closest first (at most 3)."""
    names = [name for action in parser._actions for name in action.option_strings if name.startswith('--')]
    begun = [name for name in names if name.startswith(typed)]
    return list(dict.fromkeys(begun + difflib.get_close_matches(typed, names, n=3, cutoff=0.6)))[:3]


def unknown_flag_line(parser, unknown):
    """'unrecognized arguments: --lr 100 (flags are not abbreviated; did you mean --lr_halving_steps?)'."""
    typed = next((word.split('=')[0] for word in unknown if word.startswith('--')), None)
    closest = closest_flags(parser, typed) if typed else []
    hint = f' (flags are never abbreviated; did you mean {" or ".join(closest)}?)' if closest else ''
    return f'unrecognized arguments: {" ".join(unknown)}{hint}'


def given_on_command_line(parser, argv):
    """The dests of the flags argv gives explicitly (whatever their value)."""
    saved, saved_parser_defaults = [action.default for action in parser._actions], parser._defaults
    try:
        parser._defaults = {}
        for action in parser._actions:
            action.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv)))
    finally:
        parser._defaults = saved_parser_defaults
        for action, default in zip(parser._actions, saved):
            action.default = default


def log_name_suffix(args, defaults, flags):
    """'.dest_value' for each log_name flag whose value differs from its default, in declaration order."""
    given = vars(args)
    return ''.join(f'.{f.dest}_{given[f.dest]}' for f in flags if f.log_name and given[f.dest] != defaults[f.dest])


def left_to_tuning(command):
    """The execution flags of a command left at 'auto' ('--channels_last', ...): those that would force a way."""
    return [flag.names[0] for flag in command.flags.values() if flag.execution and getattr(command.args, flag.dest) == 'auto']


def task_log_name(args):
    """The task part of every default log dir, from the flags with a task_name: 'way_5.support_1.query_15'."""
    return '.'.join(f'{flag.task_name}_{getattr(args, flag.dest)}' for flag in COMMON if flag.task_name)


def older_names(flags):
    """{older spelling: dest} of the flags, as older checkpoints name them."""
    return {old: flag.dest for flag in flags for old in flag.older_names}
