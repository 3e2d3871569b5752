"""Write one-shot runs in the layout of Lake et al.'s all_runs.zip, for `--test --lake_runs PATH`:
from images_evaluation.zip (the 20 evaluation alphabets: for the final report only) or from
the held-out validation alphabets of images_background.zip (for choosing models).

    python -m tools.lake.build_runs --data_dir D/omniglot --set background_validation --runs 40 val_runs.zip
    python -m tools.lake.build_runs --data_dir D/omniglot --set evaluation eval_runs.zip
"""
import os

from fewshot import files, flags
from fewshot.datasets.omniglot import lake_runs
from fewshot.datasets.omniglot.dataset import VALIDATION_ALPHABETS
from fewshot.errors import UserError, run_cli

SETS = {'evaluation': ('images_evaluation.zip', None),
        'background_validation': ('images_background.zip', VALIDATION_ALPHABETS)}


def main(argv=None):
    parser = flags.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('target', help='the zip to write')
    parser.add_argument('--data_dir', default=files.DATA_DIR, help='the folder holding the official zips')
    parser.add_argument('--set', choices=list(SETS), default='evaluation')
    parser.add_argument('--runs', type=int, choices=range(1, 100), default=lake_runs.NUM_RUNS, metavar='1..99')
    parser.add_argument('--seed', type=int, default=0)
    args = run_cli(lambda: parser.parse_args(argv))  # a bad flag: one line, exit 2
    name, alphabets = SETS[args.set]
    source = os.path.join(args.data_dir, name)
    if not os.path.isfile(source):
        raise SystemExit(f'error: --data_dir {args.data_dir} holds no {name}; point it at the official zips')
    try:
        lake_runs.build_runs(source, args.target, args.seed, args.runs, alphabets)
    except UserError as error:
        raise SystemExit(f'error: {error}') from None
    print(f'wrote {args.runs} runs of {args.set} characters to {args.target}')


if __name__ == '__main__':
    run_cli(main)
