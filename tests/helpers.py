"""Run the engine on a command with the tests' own learner and sampler builders."""
import argparse

from fewshot import cli, flags, registry
from fewshot.engine import runner


def command_of(args, log_dir, build_learner, build_sampler, given=None):
    """A cli.Command for args (a Command from cli.parse, or a Namespace of checked flags), whose
    learner and samplers come from the given builders. given: the flags the command line gave
    (a Namespace: those off their defaults)."""
    if isinstance(args, cli.Command):
        command = args
        command.log_dir = log_dir
    else:
        algorithm = registry.algorithm(getattr(args, 'algorithm', 'protonet'))
        dataset = registry.dataset(getattr(args, 'dataset', 'omniglot'))
        declared = {f.dest: f for f in cli.run_flags(algorithm, dataset) if f.dest in vars(args)}
        defaults = vars(flags_parser(declared.values()).parse_args([]))
        if given is None:
            given = {k for k, v in vars(args).items() if k in defaults and v != defaults[k]}
        command = cli.Command(args, set(given), declared, algorithm, dataset, log_dir)
    command.build_learner = build_learner
    command.build_sampler = build_sampler
    return command


def flags_parser(declared):
    parser = argparse.ArgumentParser()
    for flag in declared:
        flag.add_to(parser)
    return parser


def run_with(args, log_dir, build_learner, build_sampler, given=None):
    """Train or test as args say, with these builders (runner.run)."""
    return runner.run(command_of(args, log_dir, build_learner, build_sampler, given))


def common_args(**overrides):
    """Every flag of ProtoNet on Omniglot at its default, then overrides, checked as cli.parse checks them."""
    declared = cli.run_flags(registry.algorithm('protonet'), registry.dataset('omniglot'))
    args = {'algorithm': 'protonet', 'dataset': 'omniglot', **vars(flags_parser(declared).parse_args([]))}
    args.update(overrides)
    if not isinstance(args['num_support'], list):
        args['num_support'] = [args['num_support']]
    args = argparse.Namespace(**args)
    flags.check_common(args)
    return args
