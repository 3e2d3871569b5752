"""tools/protonet_ablation.py: its variants' commands, and its table read from fake event files."""
import argparse

import pytest

import protonet
from fewshot import cli
from fewshot.errors import UserError
from test_report import write_events
from tools import protonet_ablation as ablation


def test_each_variant_changes_only_its_own_flags_and_never_draws_the_test_classes(tmp_path):
    args = argparse.Namespace(out=str(tmp_path), data_dir='omniglot')
    recipe = vars(cli.parse(protonet.PROGRAM, ablation.command('recipe', args)[2:]).args)
    assert recipe['class_split'] == 'vinyals' and not recipe['test']
    for name, (flags, _) in ablation.VARIANTS.items():
        parsed = vars(cli.parse(protonet.PROGRAM, ablation.command(name, args)[2:]).args)
        changed = {key for key in parsed if parsed[key] != recipe[key]} - {'log_dir'}
        assert changed == {flag.lstrip('-') for flag in flags if flag.startswith('--')}, name
        assert parsed['num_train_iterations'] == ablation.EPISODES and not parsed['test']


def test_the_table_has_a_row_for_each_variant_run_with_its_best_and_last_validation(tmp_path):
    args = argparse.Namespace(out=str(tmp_path), data_dir='omniglot', only=None)
    write_events(str(tmp_path / 'runs' / 'recipe'), 'val_accuracy/query', [(499, 0.9), (999, 0.95), (1499, 0.94)])
    ablation.write_index(args)
    rows = [line for line in (tmp_path / 'index.md').read_text().splitlines() if line.startswith('| `')]
    assert len(rows) == 1 and rows[0].startswith('| `recipe` |')
    assert '| 95.0 (1000) | 94.0 (1500) |' in rows[0]


def test_another_seed_has_its_own_runs_and_rows(tmp_path):
    args = argparse.Namespace(out=str(tmp_path), data_dir='omniglot', only=None)
    seeded = ablation.command('recipe', args, seed=1)
    assert cli.parse(protonet.PROGRAM, seeded[2:]).args.seed == 1
    assert seeded[seeded.index('--log_dir') + 1] == str(tmp_path / 'runs' / 'recipe.seed_1')
    write_events(str(tmp_path / 'runs' / 'recipe'), 'val_accuracy/query', [(499, 0.9)])
    write_events(str(tmp_path / 'runs' / 'recipe.seed_1'), 'val_accuracy/query', [(499, 0.8)])
    ablation.write_index(args)
    rows = [line for line in (tmp_path / 'index.md').read_text().splitlines() if line.startswith('| `')]
    assert [row.split(' | ')[1] for row in rows] == ['0', '1'] and '| 80.0 (500) |' in rows[1]


def test_a_missing_data_folder_is_one_line(tmp_path):
    with pytest.raises(UserError, match='--data_dir .*nowhere: no such folder'):
        ablation.main(['--data_dir', str(tmp_path / 'nowhere'), '--out', str(tmp_path)])
