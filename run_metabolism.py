"""Few-shot learning on the TDC metabolism assays (the course's Part 4): 2-way
tasks of CYP inhibition/substrate labels on molecule features, with ProtoNet,
MAML (any variant), Reptile or a non-episodic baseline on an MLP.

    bash run_bio.sh                                        # the course's ProtoNet run
    python run_metabolism.py --data_dir ../shared/data/metabolism --algorithm maml
    python run_metabolism.py --algorithm reptile --num_inner_steps 5
    python run_metabolism.py --algorithm baseline --features morgan_counts
    python run_metabolism.py --test --log_dir D --checkpoint_step S --data_dir DIR

The same runs as `python protonet.py --dataset metabolism` and
`python maml.py --dataset metabolism [--algorithm reptile]`.
"""
import maml
import protonet
from fewshot import cli, registry
from fewshot.errors import run_cli

PROGRAM = registry.program('run_metabolism.py')
LEARNERS = {**protonet.LEARNERS, **maml.LEARNERS}  # the course's classes (the baseline is the library's)


def main(argv=None):
    return cli.main(PROGRAM, argv, LEARNERS)


if __name__ == '__main__':
    run_cli(main)
