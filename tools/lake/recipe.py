"""The best model of docs/results.md's Lake table in one command: build the background-validation
and evaluation runs, train the ensemble's members on --split lake one after the other, choose each
member's checkpoint on the validation runs, and score the ensemble (members chosen on the
validation runs, 8 test views each) once on the evaluation runs and on Lake's official runs if
given. Run again, the same command continues an interrupted one: built runs and finished members
are kept, an unfinished member resumes from its last checkpoint.

    python -m tools.lake.recipe --data_dir D/omniglot --out OUT [--official_runs all_runs.zip] \
        [--train_flags '--device gpu']
"""
import os
import shlex

import protonet
from fewshot import flags
from fewshot.errors import run_cli
from tools.lake import build_runs, ensemble, select
from tools.lake.select import runs_file

COMMON = ('--split lake --augment_rotations --inductive --num_way 20 --num_support 1 --num_query 1 '
          '--train_num_way 60 --train_num_query 5 --batch_size 1 --lr_halving_steps 2000 '
          '--num_train_iterations 3000 --num_val_tasks 100 --val_interval 100')
MEMBERS = {  # the ensemble forward selection kept on the background-validation runs (docs/results.md)
    'wide': '--episodes within_alphabet --augment_affine --train_inductive --num_hidden_channels 128 --precision auto',
    'size56': '--episodes within_alphabet --augment_affine --train_inductive --image_size 56 --precision auto',
    'long': '--episodes within_alphabet --augment_affine --train_inductive --num_train_iterations 6000',
    'affine': '--episodes within_alphabet --augment_affine',
    'inductive': '--episodes within_alphabet --augment_affine --train_inductive',
}
RUNS = {'val_runs.zip': '--set background_validation --runs 40 --seed 0',
        'eval_runs.zip': '--set evaluation --runs 80 --seed 1'}
TEST_FLAGS = '--test_views 8'


def main(argv=None):
    parser = flags.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data_dir', required=True, help='the folder holding the official Omniglot zips')
    parser.add_argument('--out', required=True, help='where the runs and the members\' log dirs go')
    parser.add_argument('--official_runs', type=runs_file, help="Lake's all_runs.zip (or its folder), scored after the evaluation runs")
    parser.add_argument('--train_flags', default='', help="flags added to every member's training, e.g. '--device gpu'")
    args = run_cli(lambda: parser.parse_args(argv))  # a bad flag: one line, exit 2
    runs = {name: os.path.join(args.out, name) for name in RUNS}
    for name, path in runs.items():
        if not os.path.exists(path):
            build_runs.main([path, '--data_dir', args.data_dir, *RUNS[name].split()])
    members = []
    for name, member_flags in MEMBERS.items():
        log_dir = os.path.join(args.out, name)
        print(f'member {name}: {member_flags}', flush=True)
        protonet.main([*COMMON.split(), *member_flags.split(), '--data_dir', args.data_dir, '--log_dir', log_dir,
                       *shlex.split(args.train_flags)])
        step, _ = select.choose_step(log_dir, runs['val_runs.zip'])
        members.append(f'{log_dir}:{step}')
    test_runs = [runs['eval_runs.zip']] + ([args.official_runs] if args.official_runs else [])
    ensemble.main(['--members', *members, '--val_runs', runs['val_runs.zip'], '--test_runs', *test_runs,
                        '--test_flags', TEST_FLAGS])


if __name__ == '__main__':
    run_cli(main)
