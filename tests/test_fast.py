"""--fast: a dataset's recipe for an algorithm sets the flags' defaults (flags given override it,
--test keeps the course's tasks), shows in --help and in the log dir, and a resumed --fast run
continues its schedule exactly."""
import pytest
import torch

import maml
import protonet
from fewshot import cli, registry
from fewshot.engine import checkpoints

PROGRAMS = {'protonet': protonet, 'maml': maml}


@pytest.mark.parametrize('algorithm', ['protonet', 'maml'])
def test_the_recipe_sets_the_defaults_and_flags_given_override_it(algorithm):
    program = PROGRAMS[algorithm].PROGRAM
    recipe = registry.FAST_RECIPES[('omniglot', algorithm)]
    plain = vars(cli.parse(program, []).args)
    fast = cli.parse(program, ['--fast'])
    assert all(vars(fast.args)[dest] == value != plain[dest] for dest, value in recipe.items())
    assert '.fast_True' in fast.log_dir and fast.log_dir != cli.parse(program, []).log_dir
    assert f'batch_size_{recipe.get("batch_size", plain["batch_size"])}' in fast.log_dir
    dest, value = next(iter(recipe.items()))
    other = 1 if value is not True and value != 1 else 2
    overridden = cli.parse(program, ['--fast', f'--{dest}', str(other)] if value is not True else ['--fast'])
    if value is not True:
        assert getattr(overridden.args, dest) == other and overridden.given >= {'fast', dest}
    tested = cli.parse(program, ['--fast', '--test', '--log_dir', 'x'])
    assert tested.args.num_query == plain['num_query'] and tested.args.num_way == plain['num_way']


def test_help_lists_the_recipe(capsys):
    with pytest.raises(SystemExit):
        protonet.main(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    for dest, value in registry.FAST_RECIPES[('omniglot', 'protonet')].items():
        assert (f'--{dest}' if value is True else f'--{dest} {value}') in text


def test_maml_refuses_wider_training_tasks_than_its_head():
    with pytest.raises(cli.flags.UserError, match='--train_num_way 20: the maml head has --num_way 5 outputs'):
        cli.parse(maml.PROGRAM, ['--train_num_way', '20'])


def test_training_tasks_take_the_training_shape_and_validation_the_scored_one(omniglot_dir):
    command = cli.parse(protonet.PROGRAM, ['--train_num_way', '7', '--train_num_query', '2', '--num_support', '3',
                                           '--data_dir', omniglot_dir])
    train = command.build_sampler('train', command.args, 0, 'cpu').sample(2)
    val = command.build_sampler('val', command.args, 0, 'cpu').sample(2)
    assert train.images_query.shape[:2] == (2, 14) and train.images_support.shape[:2] == (2, 21)
    assert val.images_query.shape[:2] == (2, 75) and val.images_support.shape[:2] == (2, 15)


@pytest.mark.slow
def test_a_resumed_fast_run_continues_its_schedule_exactly(omniglot_dir, tmp_path):
    """The recipe's schedule, halving here every 2 steps: 2 + 2 steps resumed equal 4 steps at once."""
    short = ['--fast', '--num_support', '5', '--data_dir', omniglot_dir, '--num_val_tasks', '2', '--batch_size', '2',
             '--lr_halving_steps', '2', '--num_hidden_channels', '8']
    whole, parts = str(tmp_path / 'whole'), str(tmp_path / 'parts')
    protonet.main([*short, '--num_train_iterations', '4', '--log_dir', whole])
    protonet.main([*short, '--num_train_iterations', '2', '--log_dir', parts])
    protonet.main([*short, '--num_train_iterations', '4', '--log_dir', parts, '--checkpoint_step', '1'])
    expected, resumed = checkpoints.load(whole, 3), checkpoints.load(parts, 3)
    rate = registry.FAST_RECIPES[('omniglot', 'protonet')]['learning_rate']
    assert resumed['optimizer']['param_groups'][0]['lr'] == rate / 2
    assert resumed['args']['fast'] and resumed['args']['learning_rate'] == rate
    assert_equal_tensors(expected['learner'], resumed['learner'])
    assert_equal_tensors(expected['optimizer']['state'], resumed['optimizer']['state'])


def assert_equal_tensors(expected, actual):
    """Nested dicts of tensors equal bit for bit (and some tensor among them)."""
    flat = lambda tree: [leaf for value in tree.values() for leaf in (flat(value) if isinstance(value, dict) else
                                                                       [value])]
    pairs = [(a, b) for a, b in zip(flat(expected), flat(actual)) if isinstance(a, torch.Tensor)]
    assert pairs and len(flat(expected)) == len(flat(actual))
    assert all(torch.equal(a, b) for a, b in pairs)
