"""Few-shot learning on the TDC metabolism assays (the course's Part 4): 2-way
tasks of CYP inhibition/substrate labels on 1024-bit Morgan fingerprints, with
ProtoNet, MAML (any variant), Reptile or a non-episodic baseline on an MLP.

    bash run_bio.sh                                        # the course's ProtoNet run
    python run_metabolism.py --data_dir ../shared/data/metabolism --algorithm maml
    python run_metabolism.py --algorithm reptile --num_inner_steps 5
    python run_metabolism.py --algorithm baseline --features morgan_counts
    python run_metabolism.py --test --log_dir D --checkpoint_step S --data_dir DIR

The same runs as `python protonet.py --dataset metabolism` and
`python maml.py --dataset metabolism [--algorithm reptile]`.
"""
import cli
import util

SCRIPT = cli.Script(description='Train or test ProtoNet, MAML, Reptile or the baseline on the TDC metabolism assays.',
                    algorithms=('protonet', 'maml', 'reptile', 'baseline'), datasets=('metabolism',))


def main(argv=None):
    return cli.main(SCRIPT, argv)


if __name__ == '__main__':
    util.run_cli(main)
