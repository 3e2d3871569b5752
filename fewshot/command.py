"""A parsed and checked command (cli.parse makes it): what the engine runs, and the builders of
its learner and samplers, which the engine calls."""
import argparse
import dataclasses
import shlex

from fewshot import contracts


@dataclasses.dataclass
class Command:
    """A parsed, checked command: what the engine runs.

    args: the flags' values (argparse.Namespace), saved in checkpoints as they are.
    given: the dests the command line gave explicitly.
    flags: {dest: flags.Flag} of every flag of the run.
    program, argv: the program and the command line, to say how to resume.
    learners: {algorithm name: the program's learner class} (the course's classes); others: the library's.
    """
    args: object
    given: set
    flags: dict
    algorithm: object
    dataset: object
    log_dir: str
    program: str = 'python -m fewshot'
    argv: tuple = ()
    learners: dict = dataclasses.field(default_factory=dict)

    def resume_line(self, step):
        """The command that resumes this run from a step's checkpoint."""
        words, skip = [], False
        for word in self.argv:
            if skip or word.startswith('--checkpoint_step'):
                skip = word == '--checkpoint_step'
                continue
            words.append(shlex.quote(word))
        program = self.program if self.program.startswith('python') else f'python {self.program}'
        log_dir = [] if self.args.log_dir else ['--log_dir', shlex.quote(self.log_dir)]
        return ' '.join([program, *words, *log_dir, '--checkpoint_step', str(step)])

    def build_learner(self, args, device):
        program_class = self.learners.get(self.algorithm.name)  # an algorithm no program subclasses needs no such argument
        learner = self.algorithm.build_learner(args, self.dataset, device, *([program_class] if program_class else []))
        return contracts.check(learner, contracts.Learner, f'the learner of --algorithm {self.algorithm.name}')

    def build_sampler(self, split, args, seed, device):
        if split == 'train':  # training tasks may be wider or hold fewer queries than the tasks it is scored on
            args = argparse.Namespace(**{**vars(args), 'num_way': args.train_num_way or args.num_way,
                                         'num_query': args.train_num_query or args.num_query})
        sampler = self.dataset.build_sampler(split, args, seed, device)
        return contracts.check(sampler, contracts.Sampler, f'the {split} sampler of --dataset {self.dataset.name}')
