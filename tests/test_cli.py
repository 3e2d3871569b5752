"""The shape every algorithm and dataset plugs into: the scripts' flags and
defaults, every algorithm on every dataset it fits, a new dataset added by a
module and one table entry, flags that stay as parsed, and checkpoints in the
layout written before the training loop owned the optimizer."""
import copy
import os
import subprocess
import sys
import types

import pytest
import torch

import maml
import protonet
import run_metabolism
from fewshot import cli, flags, registry, tasks
from fewshot.engine import checkpoints
from fewshot.errors import UserError
from helpers import run_with
from test_metabolism import write_tables
from test_protonet import synthetic_sampler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--num_train_iterations', '3', '--num_val_tasks', '4', '--batch_size', '2']


def parsed(program, *flags):
    return cli.parse(program, list(flags)).args


def test_the_course_defaults_of_each_script():
    proto, meta, bio = parsed(protonet.PROGRAM), parsed(maml.PROGRAM), parsed(run_metabolism.PROGRAM)
    assert (proto.num_way, proto.num_support, proto.num_query, proto.batch_size, proto.learning_rate,
            proto.num_train_iterations, proto.data_dir) == (5, 1, 15, 16, 0.001, 5000, './data')
    assert (meta.inner_lr, meta.learning_rate, meta.num_train_iterations, meta.num_inner_steps) == (0.4, 0.001, 15000, 1)
    assert (bio.algorithm, bio.num_way, bio.num_support, bio.num_query, bio.batch_size, bio.learning_rate,
            bio.num_train_iterations, bio.num_val_tasks, bio.data_dir) == ('protonet', 2, 5, 10, 4, 0.0005, 8000, 600,
                                                                            './data/metabolism')
    assert parsed(maml.PROGRAM, '--algorithm', 'reptile').learning_rate == 1.0  # Reptile's initial meta step size
    sine = parsed(maml.PROGRAM, '--dataset', 'sinusoid')
    assert (sine.num_way, sine.num_support, sine.num_query, sine.batch_size, sine.inner_lr) == (1, 10, 10, 25, 0.01)
    assert parsed(run_metabolism.PROGRAM, '--algorithm', 'maml').inner_lr == 0.1
    assert parsed(maml.PROGRAM, '--dataset', 'metabolism').learning_rate == 0.0005  # the metabolism runs' rate


def test_flag_spellings_are_aliases():
    assert parsed(run_metabolism.PROGRAM, '--datadir', 'X').data_dir == 'X'
    assert parsed(maml.PROGRAM, '--outer_lr', '0.01').learning_rate == 0.01
    assert parsed(protonet.PROGRAM, '--data_dir', 'Y').data_dir == 'Y'


def test_default_log_dirs_keep_the_course_names():
    def log_dir(program, *flags):
        return cli.parse(program, list(flags)).log_dir
    assert log_dir(protonet.PROGRAM, '--num_support', '5') == \
        './logs/protonet/omniglot.way_5.support_5.query_15.lr_0.001.batch_size_16'
    assert log_dir(run_metabolism.PROGRAM) == './logs/metabolism/protonet.way_2.support_5.query_10.lr_0.0005.batch_size_4'
    assert log_dir(maml.PROGRAM, '--learn_inner_lrs') == ('./logs/maml/omniglot.way_5.support_1.query_15.inner_steps_1'
                                                         '.inner_lr_0.4.learn_inner_lrs_True.outer_lr_0.001'
                                                         '.batch_size_16')
    assert log_dir(maml.PROGRAM, '--algorithm', 'reptile', '--dataset', 'sinusoid').startswith(
        './logs/reptile/sinusoid.way_1.support_10.query_10.inner_steps_1.inner_lr_0.01')
    assert log_dir(maml.PROGRAM, '--first_order', '--anil', '--split', 'lake', '--weight_decay', '0.1') == (
        './logs/maml/omniglot.way_5.support_1.query_15.inner_steps_1.inner_lr_0.4.learn_inner_lrs_False'
        '.outer_lr_0.001.batch_size_16.first_order_True.anil_True.class_split_lake.weight_decay_0.1')


def run_cli(script, *flags):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *flags], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_protonet_does_no_regression():
    result = run_cli('protonet.py', '--dataset', 'sinusoid')
    assert result.returncode == 2 and "invalid choice: 'sinusoid'" in result.stderr


@pytest.mark.parametrize('script, flags', [
    (protonet.PROGRAM, ['--dataset', 'metabolism']),
    (maml.PROGRAM, ['--dataset', 'metabolism', '--num_inner_steps', '2', '--learn_inner_lrs']),
    (run_metabolism.PROGRAM, ['--algorithm', 'reptile', '--num_inner_steps', '2']),
    (maml.PROGRAM, ['--dataset', 'sinusoid', '--algorithm', 'reptile']),
    (maml.PROGRAM, ['--dataset', 'sinusoid', '--anil']),
    (run_metabolism.PROGRAM, ['--algorithm', 'maml', '--per_step_bn', '--multi_step_loss', '--num_inner_steps', '2']),
])
def test_every_algorithm_trains_and_tests_on_the_datasets_it_fits(tmp_path, capsys, script, flags):
    data = write_tables(tmp_path / 'data')
    log_dir = str(tmp_path / 'log')
    common = ['--data_dir', data, '--log_dir', log_dir, '--num_support', '2', '--num_query', '3', *TINY]
    cli.main(script, [*flags, *common])
    saved = checkpoints.load(log_dir, 2)
    first = checkpoints.load(log_dir, 0)
    def chosen(flag, default):
        return flags[flags.index(flag) + 1] if flag in flags else default
    algorithms, datasets = script.offers()
    assert saved['args']['algorithm'] == chosen('--algorithm', algorithms[0])
    assert saved['args']['dataset'] == chosen('--dataset', datasets[0])
    weights = saved['learner'].get('meta_parameters') or saved['learner']['network']
    before = first['learner'].get('meta_parameters') or first['learner']['network']
    assert any(not torch.equal(weights[k], before[k]) for k in weights)  # it trained
    cli.main(script, ['--test', '--data_dir', data, '--log_dir', log_dir, '--num_support', '2', '--num_query', '3',
                      '--num_test_tasks', '4'])  # the algorithm and dataset come from the checkpoint
    word = 'Loss' if saved['args']['dataset'] == 'sinusoid' else 'Accuracy'
    assert f'{word} over 4 test tasks: mean' in capsys.readouterr().out


def test_test_takes_the_checkpoints_algorithm_or_names_the_script(tmp_path):
    data = write_tables(tmp_path / 'data')
    log_dir = str(tmp_path / 'log')
    cli.main(maml.PROGRAM, ['--dataset', 'metabolism', '--algorithm', 'reptile', '--data_dir', data, '--log_dir',
                           log_dir, '--num_support', '2', '--num_query', '3', *TINY])
    command = cli.parse(run_metabolism.PROGRAM, ['--test', '--log_dir', log_dir])
    assert (command.args.algorithm, command.algorithm.name, command.dataset.name) == ('reptile', 'reptile', 'metabolism')
    with pytest.raises(UserError, match='written by reptile on metabolism tasks; test it with '
                                        'run_metabolism.py --algorithm reptile'):
        cli.parse(protonet.PROGRAM, ['--test', '--log_dir', log_dir])


def test_test_and_resume_take_the_runs_data_folder_unless_given(tmp_path, capsys):
    data, log_dir = write_tables(tmp_path / 'data'), str(tmp_path / 'log')
    shape = ['--num_support', '2', '--num_query', '3']
    run_metabolism.main(['--datadir', data, '--log_dir', log_dir, *shape, *TINY])
    run_metabolism.main(['--log_dir', log_dir, *shape, *TINY[2:], '--num_train_iterations', '5',
                         '--checkpoint_step', '2'])  # no --datadir: the run's
    assert checkpoints.load(log_dir, 4)['args']['data_dir'] == data
    run_metabolism.main(['--test', '--log_dir', log_dir, *shape, '--num_test_tasks', '4'])
    assert 'Accuracy over 4 test tasks' in capsys.readouterr().out
    (tmp_path / 'a_file').write_text('')
    with pytest.raises(UserError, match='--data_dir .*a_file is a file'):  # a folder given is the one used
        run_metabolism.main(['--test', '--log_dir', log_dir, *shape, '--num_test_tasks', '4',
                             '--data_dir', str(tmp_path / 'a_file')])


# ---------------------------------------------------------------- a new dataset, a new algorithm

def module_from_readme(name):
    """The module whose code docs/extending.md shows as `# {name}.py` (so its examples run)."""
    text = open(os.path.join(ROOT, 'docs', 'extending.md')).read()
    code = text.split(f'```python\n# {name}.py\n')[1].split('```')[0]
    module = types.ModuleType(name)
    exec(compile(code, f'docs/extending.md:{name}.py', 'exec'), module.__dict__)
    return module


@pytest.fixture
def clusters(monkeypatch):
    """docs/extending.md's example dataset, registered with its one line."""
    monkeypatch.setitem(sys.modules, 'clusters', module_from_readme('clusters'))
    monkeypatch.setitem(registry.DATASETS, 'clusters', 'clusters:Clusters')


@pytest.mark.parametrize('algorithm', ['protonet', 'maml', 'reptile'])
def test_a_new_dataset_plugs_in_with_its_module_and_one_table_entry(tmp_path, capsys, clusters, algorithm):
    """docs/extending.md's example dataset, 3-way tasks of Gaussian clusters in 8-D, from the course's programs."""
    program = protonet.PROGRAM if algorithm == 'protonet' else maml.PROGRAM
    flags = ['--dataset', 'clusters', '--noise', '0.1'] + ([] if algorithm == 'protonet' else ['--algorithm', algorithm])
    assert cli.parse(program, flags).log_dir.startswith(f'./logs/{algorithm}/clusters.way_3.support_2.query_3')
    log_dir = str(tmp_path)
    cli.main(program, [*flags, '--log_dir', log_dir, *TINY])
    cli.main(program, ['--test', '--log_dir', log_dir, '--num_test_tasks', '20', '--noise', '0.1'])
    mean = float(capsys.readouterr().out.split('Accuracy over 20 test tasks: mean ')[1].split(',')[0])
    assert mean > 0.6  # chance is 1/3; well-separated clusters are easy even after 3 steps


def test_a_new_algorithm_plugs_in_with_its_module_and_one_table_entry(tmp_path, monkeypatch, capsys, clusters):
    """docs/extending.md's example algorithm, a classifier trained without adaptation, from python -m fewshot."""
    monkeypatch.setitem(sys.modules, 'classifier', module_from_readme('classifier'))
    monkeypatch.setitem(registry.ALGORITHMS, 'classifier', 'classifier:ClassifierAlgorithm')
    program, log_dir = registry.program('python -m fewshot'), str(tmp_path)
    cli.main(program, ['--algorithm', 'classifier', '--dataset', 'clusters', '--log_dir', log_dir,
                       '--num_train_iterations', '20', '--num_val_tasks', '4'])
    first, last = checkpoints.load(log_dir, 0)['learner'], checkpoints.load(log_dir, 19)['learner']
    assert any(not torch.equal(first[k], last[k]) for k in first)  # the loop trained its parameters
    cli.main(program, ['--test', '--log_dir', log_dir, '--num_test_tasks', '8'])
    assert 'Accuracy over 8 test tasks: mean' in capsys.readouterr().out


def test_a_member_missing_from_a_contract_is_one_line_naming_it(monkeypatch, clusters):
    del sys.modules['clusters'].Clusters.network
    with pytest.raises(UserError, match=r"dataset 'clusters' clusters.Clusters does not fulfil the Dataset contract "
                                        r'\(fewshot/contracts.py\): define network'):
        cli.parse(protonet.PROGRAM, ['--dataset', 'clusters'])


def test_every_registered_dataset_and_algorithm_fulfils_its_contract():
    for name in registry.DATASETS:
        dataset = registry.dataset(name)
        assert dataset.name == name and dataset.task in (tasks.CLASSIFICATION, tasks.REGRESSION)
    for name in registry.ALGORITHMS:
        assert registry.algorithm(name).name == name
    offered = {(a, d) for p in registry.PROGRAMS for a in p.offers()[0] for d in p.offers()[1]
               if registry.algorithm(a).fits(registry.dataset(d))}
    assert offered == {(a, d) for a in registry.ALGORITHMS for d in registry.DATASETS
                       if registry.algorithm(a).fits(registry.dataset(d))}  # every pair that fits has a program
    assert registry.command_for('reptile', 'sinusoid') == 'maml.py --algorithm reptile --dataset sinusoid'
    assert registry.command_for('baseline', 'metabolism') == 'run_metabolism.py --algorithm baseline'


# ---------------------------------------------------------------- flags stay as parsed

def test_a_run_does_not_change_its_flags(tmp_path):
    args = parsed(maml.PROGRAM, '--num_way', '3', '--num_hidden_channels', '4', '--num_query', '2', *TINY)
    before = copy.deepcopy(vars(args))
    build = lambda a, device: registry.algorithm('maml').build_learner(a, registry.dataset('omniglot'), device)  # noqa: E731
    sampler = lambda split, a, seed, device: synthetic_sampler(split, a, seed, device)  # noqa: E731
    run_with(args, str(tmp_path), build, sampler, given=())
    sweep = parsed(maml.PROGRAM, '--test', '--num_way', '3', '--num_support', '1', '2', '--num_query', '2',
                   '--num_test_tasks', '4')
    swept = copy.deepcopy(vars(sweep))
    run_with(sweep, str(tmp_path), build, sampler, given=())
    assert vars(args) == before and vars(sweep) == swept
    assert swept['support_sweep'] == [1, 2] and swept['num_support'] == 1 and swept['num_inner_steps'] is None


@pytest.mark.parametrize('algorithm', ['protonet', 'maml'])
def test_twenty_way_trains_and_tests_with_a_k_sweep(tmp_path, capsys, algorithm):
    """20-way tasks (MAML with a 20-output head); ProtoNet may test with other N than it trained with."""
    def sampler(split, args, seed, device):
        examples = torch.rand(25, 20, 1, 28, 28, generator=torch.Generator().manual_seed(len(split)))
        return tasks.TaskSampler(examples, args.num_way, args.num_support, args.num_query, seed, device)
    script = maml.PROGRAM if algorithm == 'maml' else protonet.PROGRAM
    common = ['--num_hidden_channels', '4', '--batch_size', '2', '--num_query', '2', '--num_val_tasks', '2']
    command = cli.parse(script, ['--num_way', '20', '--num_train_iterations', '2', *common])
    build = lambda a, device: command.algorithm.build_learner(a, command.dataset, device)  # noqa: E731
    run_with(command, str(tmp_path), build, sampler)
    if algorithm == 'maml':
        assert checkpoints.load(str(tmp_path), 1)['learner']['meta_parameters']['head'].shape == (20, 4)
    test_way = '20' if algorithm == 'maml' else '5'
    sweep = cli.parse(script, ['--test', '--num_way', test_way, '--num_support', '1', '3', '--num_query', '3',
                               '--num_test_tasks', '4', *common[:2]])
    results = run_with(sweep, str(tmp_path), build, sampler)
    assert len(results) == 2 and all(0 <= mean <= 1 for mean, _ in results)
    out = capsys.readouterr().out
    assert 'num_support 1: Accuracy over 4 test tasks' in out and 'num_support 3: Accuracy over 4 test tasks' in out


def test_a_pairs_defaults_are_one_table_shown_by_help(capsys, monkeypatch):
    assert cli.parse(maml.PROGRAM, ['--dataset', 'metabolism']).args.inner_lr == 0.1
    assert cli.parse(maml.PROGRAM, ['--dataset', 'sinusoid', '--algorithm', 'reptile']).args.inner_lr == 0.01
    assert cli.parse(maml.PROGRAM, []).args.inner_lr == 0.4
    with pytest.raises(SystemExit):
        cli.parse(maml.PROGRAM, ['--dataset', 'metabolism', '--help'])
    assert '--algorithm maml on --dataset metabolism defaults to --inner_lr 0.1' in ' '.join(capsys.readouterr().out.split())
    monkeypatch.setitem(registry.PAIR_DEFAULTS, ('metabolism', 'protonet'), dict(inner_lr=0.1))
    with pytest.raises(ValueError, match='inner_lr'):  # a default of a flag the run does not have is a mistake
        cli.parse(protonet.PROGRAM, ['--dataset', 'metabolism'])


def test_the_flags_left_to_tuning_are_the_execution_flags_at_auto():
    command = cli.parse(maml.PROGRAM, ['--channels_last', 'no'])
    assert flags.left_to_tuning(command) == ['--vmap_tasks', '--group_tasks']
    assert flags.left_to_tuning(cli.parse(protonet.PROGRAM, [])) == ['--channels_last', '--encoder_calls']


# ---------------------------------------------------------------- --test draws the tasks the model learned

def trained_flags(program, *flags_given):
    return vars(cli.parse(program, list(flags_given)).args)


def test_test_tasks_take_the_trained_shape_rotations_and_episodes_unless_given():
    trained = trained_flags(protonet.PROGRAM, '--num_way', '20', '--num_support', '5', '--num_query', '7',
                            '--augment_rotations', '--split', 'vinyals', '--episodes', 'within_alphabet', '--seed', '3')
    plain = flags.task_args(cli.parse(protonet.PROGRAM, ['--test']), trained)
    assert (plain.num_way, plain.num_support, plain.support_sweep, plain.num_query) == (20, 5, [5], 7)
    assert plain.augment_rotations and plain.class_split == 'vinyals' and plain.episodes == 'within_alphabet'
    assert plain.seed == 0  # the test tasks do not depend on the training seed
    given = flags.task_args(cli.parse(protonet.PROGRAM, ['--test', '--num_way', '5', '--num_support', '1', '3',
                                                         '--episodes', 'random']), trained)
    assert (given.num_way, given.num_support, given.support_sweep, given.num_query) == (5, 1, [1, 3], 7)
    assert given.episodes == 'random' and given.augment_rotations  # rotations say which classes it learned
    model = flags.model_args(cli.parse(protonet.PROGRAM, ['--test', '--num_way', '5']), trained)
    assert model.num_way == 20  # the model is rebuilt as trained


def test_every_flag_the_omniglot_test_sampler_reads_is_drawn_as_trained(tmp_path):
    """Each flag the test sampler reads takes the trained value unless given (SHAPE, TEST_TIME,
    RECORDED) or always (TASKS): none is left at the command line's default (MODEL)."""
    import argparse
    read = set()

    class Recording(argparse.Namespace):
        def __getattribute__(self, name):
            read.add(name)
            return super().__getattribute__(name)
    command = cli.parse(protonet.PROGRAM, ['--test', '--data_dir', str(tmp_path / 'absent')])
    with pytest.raises(Exception):  # reads its flags, then fails to find the data
        command.dataset.build_sampler('test', Recording(**vars(command.args)), 0, 'cpu')
    read &= set(command.flags)
    assert {'num_way', 'num_support', 'num_query', 'augment_rotations', 'class_split', 'episodes'} <= read
    training_only = {'augment_affine', 'augment_elastic'}  # distort training images only
    assert [dest for dest in read - training_only if command.flags[dest].at_test == flags.MODEL] == []


# ---------------------------------------------------------------- no abbreviations

@pytest.mark.parametrize('program', [protonet, maml, run_metabolism])
def test_an_abbreviated_flag_is_refused_naming_the_real_one(program):
    with pytest.raises(UserError, match=r'unrecognized arguments: --lr 100 \(flags are never abbreviated; did you '
                                        r'mean --lr_halving_steps'):
        program.main(['--lr', '100'])
    with pytest.raises(UserError, match='did you mean --learning_rate'):
        program.main(['--learning_rat', '0.1'])
    with pytest.raises(UserError, match='unrecognized arguments: --test_tasks'):  # before any parse of a checkpoint
        program.main(['--test', '--test_tasks', '5'])


def test_the_tools_refuse_abbreviations_in_one_line(capsys, tmp_path):
    from tools import bench, report
    from tools.lake import select as lake_select
    with pytest.raises(UserError, match='--onl .*did you mean --only'):
        report.parse_args(['--onl', 'protonet_5w1s'])
    (tmp_path / 'state0.pt').touch()
    (tmp_path / 'runs.zip').touch()
    runs = str(tmp_path / 'runs.zip')
    for main, argv, real in ((lake_select.main, ['--log_dir', str(tmp_path), '--val_runs', runs, '--test_runs', runs,
                                                 '--ever', '5'], '--every'),
                             (bench.main, ['--repeat', '2'], '--repeats')):
        with pytest.raises(SystemExit):
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('error: ') and f'did you mean {real}' in err[0], err


# ---------------------------------------------------------------- --help

@pytest.mark.parametrize('program, own', [(protonet.PROGRAM, '--joint_batch_norm'), (maml.PROGRAM, '--inner_lr'),
                                          (run_metabolism.PROGRAM, '--joint_batch_norm')])
def test_help_shows_the_flags_in_sections_by_role(capsys, program, own):
    with pytest.raises(SystemExit):
        cli.parse(program, ['--help'])
    lines = capsys.readouterr().out.splitlines()
    headings = [i for i, line in enumerate(lines) if line and not line.startswith(' ') and line.endswith('):')]
    titles = [lines[i].split(' (')[0] for i in headings]
    assert titles == ['data', 'task', 'training', f'--algorithm {program.offers()[0][0]}', 'execution', 'test']

    def section_of(flag):
        at = next(i for i, line in enumerate(lines) if line.startswith(f'  {flag} ') or line == f'  {flag}')
        return titles[max(j for j, h in enumerate(headings) if h < at)]
    expected = {'--data_dir': 'data', '--num_support': 'task', '--train_num_way': 'task', '--learning_rate': 'training',
                '--device': 'execution', '--precision': 'execution', '--checkpoint_step': 'test', '--csv': 'test',
                own: titles[3]}
    assert {flag: section_of(flag) for flag in expected} == expected
