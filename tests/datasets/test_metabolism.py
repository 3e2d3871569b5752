"""The metabolism data path (tables or pickle -> fingerprints -> splits -> tasks),
run_metabolism.py, and a short run on the real TDC tables."""
import argparse
import os
import pickle
import re
import sys

import numpy as np
import pytest
import torch

import maml

import run_metabolism
from fewshot.engine import loop
from fewshot.engine import evaluation
from fewshot import cli
from fewshot import networks
from fewshot import tasks
from fewshot import runtime
from fewshot import stats
from fewshot.datasets.metabolism import tables as metabolism_tables
from fewshot.datasets.metabolism import features as metabolism_features
from fewshot.datasets.metabolism import dataset as metabolism_dataset
from fewshot.errors import UserError


ALKANES = ['C' * n for n in range(1, 21)]
ALCOHOLS = ['C' * n + 'O' for n in range(1, 21)]


def write_tables(folder, smiles=ALKANES + ALCOHOLS, extra=()):
    """The eight assays as tiny tables: alternating labels over the given molecules (+ extra rows)."""
    os.makedirs(folder, exist_ok=True)
    for assay in metabolism_tables.ASSAYS:
        with open(metabolism_tables.table_path(folder, assay), 'w') as f:
            f.write('Drug_ID\tDrug\tY\n')
            for i, text in enumerate(smiles):
                f.write(f'{i}\t{text}\t{i % 2}\n')
            for i, (text, label) in enumerate(extra):
                f.write(f'x{i}\t{text}\t{label}\n')
    return str(folder)


def coded_data(sizes=None):
    """Synthetic featurised assays whose feature rows encode (assay, row) in their first 3 entries."""
    data = {}
    for a, assay in enumerate(metabolism_tables.ASSAYS):
        n = (sizes or {}).get(assay, 60)
        features = np.zeros((n, metabolism_tables.FINGERPRINT_BITS), dtype=np.float32)
        features[:, 0] = a
        features[:, 1] = np.arange(n)
        labels = (np.arange(n) * 7 % 3 == 0).astype(np.int64)  # unbalanced labels
        features[:, 2] = labels
        data[assay] = (features, labels)
    return data


KNOWN_MOLECULES = ['CC(=O)Oc1ccccc1C(=O)O', 'Cn1cnc2c1c(=O)n(C)c(=O)n2C', 'CCO', 'c1ccccc1', 'C' * 300]


def rdkit_reference(name, smiles):
    """RDKit's own (older, separate API) computation of one featurisation, as a dense row."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem, Descriptors, MACCSkeys
    RDLogger.DisableLog('rdApp.*')  # the older Morgan API prints deprecation warnings
    mol = Chem.MolFromSmiles(smiles)
    if name == 'rdkit2d':
        return np.array([function(mol) for _, function in Descriptors._descList])
    if name == 'morgan_counts':
        row = np.zeros(1024)
        for bit, count in AllChem.GetHashedMorganFingerprint(mol, 2, nBits=1024).GetNonzeroElements().items():
            row[bit] = min(count, 255)
        return row
    vector = MACCSkeys.GenMACCSKeys(mol) if name == 'maccs' else AllChem.GetMorganFingerprintAsBitVect(
        mol, {'morgan3': 3}.get(name, 2), nBits={'morgan2048': 2048}.get(name, 1024), useFeatures=name == 'fcfp4')
    row = np.zeros(vector.GetNumBits())
    row[list(vector.GetOnBits())] = 1
    return row


@pytest.mark.parametrize('name', list(metabolism_features.FEATURES))
def test_features_equal_rdkit_for_known_molecules(name):
    features, canonical = metabolism_features.fingerprints(KNOWN_MOLECULES, name)
    assert features.shape == (5, metabolism_features.feature_width(name))
    for row, text in zip(features, KNOWN_MOLECULES):
        np.testing.assert_allclose(row, rdkit_reference(name, text), rtol=1e-12)
    assert features.dtype == (np.float64 if name == 'rdkit2d' else np.uint8)
    assert canonical[2] == 'CCO'
    if name == 'morgan_counts':
        assert features[4].max() == 255  # the 298 CH2 groups of C300, clipped


def test_feature_combinations_and_bad_names():
    assert metabolism_features.feature_width('morgan+maccs') == 1024 + 167
    for bad in ('ecfp', 'morgan+morgan', 'morgan+', ''):
        with pytest.raises(UserError, match=re.escape(f'--features {bad}: give one or more of morgan, ')):
            metabolism_features.feature_names(bad)


def test_invalid_smiles_counted_and_dropped_not_zeroed():
    bits, labels, report = metabolism_features.clean_assay(['CCO', 'C1CC', 'c1ccccc1', 'not a molecule'],
                                                  np.array([0, 1, 1, 0]))
    assert report['invalid_smiles'] == 2 and report['molecules'] == 2
    assert labels.tolist() == [0, 1] and (bits.sum(1) > 0).all()
    assert '2 unparsable SMILES dropped' in metabolism_features.report_line('X', report)


def test_duplicates_merged_and_conflicts_dropped():
    smiles = ['CCO', 'OCC', 'CCC', 'C(C)C', 'CCCC']  # ethanol twice (agreeing), propane twice (conflicting)
    bits, labels, report = metabolism_features.clean_assay(smiles, np.array([1, 1, 0, 1, 0]))
    assert report['duplicates_merged'] == 1 and report['conflicting_dropped'] == 2
    assert report['molecules'] == 2 and labels.tolist() == [1, 0]


def test_malformed_table_names_file(tmp_path):
    folder = write_tables(tmp_path)
    path = metabolism_tables.table_path(folder, 'CYP1A2_Veith')
    with open(path, 'a') as f:
        f.write('99\tCCO\tmaybe\n')
    with pytest.raises(UserError, match='cyp1a2_veith.tab, line 42'):
        metabolism_tables.read_table(path)


def test_cache_reused_then_rebuilt_when_a_table_changes(tmp_path, monkeypatch):
    folder = write_tables(tmp_path)
    first = metabolism_dataset.load_metabolism(folder, download=False)
    assert os.path.isfile(metabolism_features.cache_path(folder))
    monkeypatch.setattr(metabolism_features, 'featurize_tables', lambda d: pytest.fail('cache not used'))
    again = metabolism_dataset.load_metabolism(folder, download=False)
    for assay in metabolism_tables.ASSAYS:
        assert np.array_equal(first[assay][0], again[assay][0]) and np.array_equal(first[assay][1], again[assay][1])
    monkeypatch.undo()
    write_tables(tmp_path, extra=[('CCN', 1)])
    changed = metabolism_dataset.load_metabolism(folder, download=False)
    assert len(changed['CYP1A2_Veith'][1]) == len(first['CYP1A2_Veith'][1]) + 1


def test_pickle_and_tables_give_the_same_tasks(tmp_path):
    tables = metabolism_dataset.load_metabolism(write_tables(tmp_path / 'tab'), download=False)
    os.makedirs(tmp_path / 'pkl')
    course_keys = {a: a.replace('_CarbonMangels', '') for a in metabolism_tables.ASSAYS}  # e.g. CYP2C9_Substrate
    with open(tmp_path / 'pkl' / metabolism_tables.PICKLE_NAME, 'wb') as f:
        pickle.dump({course_keys[a]: {'feature': x.astype(np.float64), 'label': y} for a, (x, y) in tables.items()}, f)
    from_pickle = metabolism_dataset.load_metabolism(str(tmp_path / 'pkl'), download=False)
    for split in ('train', 'val', 'test'):
        batches = [metabolism_dataset.MoleculeTaskSampler(metabolism_dataset.split_pools(data, split), 2, 3, 4, seed=5).sample(6)
                   for data in (tables, from_pickle)]
        for a, b in zip(*(vars(batch).values() for batch in batches)):
            assert a.dtype == b.dtype and torch.equal(a, b)
        assert batches[0].images_support.shape == (6, 6, 1024) and batches[0].images_query.shape == (6, 8, 1024)


def test_pickle_missing_assay_is_a_clear_error(tmp_path):
    with open(tmp_path / metabolism_tables.PICKLE_NAME, 'wb') as f:
        pickle.dump({'CYP1A2_Veith': {'feature': np.zeros((3, 1024)), 'label': np.zeros(3)}}, f)
    with pytest.raises(UserError, match='lacks the assays CYP2C19_Veith'):
        metabolism_dataset.load_metabolism(str(tmp_path))


def decode(features):
    """(..., 1024) coded features -> (assay index, row, label) integer tensors."""
    return features[..., 0].long(), features[..., 1].long(), features[..., 2].long()


@pytest.mark.parametrize('split', ['train', 'val', 'test'])
def test_tasks_are_one_assay_label_0_vs_1(split):
    data = coded_data()
    sampler = metabolism_dataset.MoleculeTaskSampler(metabolism_dataset.split_pools(data, split), 2, 4, 3, seed=0)
    batch = sampler.sample(200)
    allowed = metabolism_tables.TRAIN_ASSAYS if split == 'train' else metabolism_tables.HELDOUT_ASSAYS
    names = list(metabolism_tables.ASSAYS)
    seen_assays, first_labels = set(), set()
    for images_support, labels_support, images_query, labels_query in batch:
        assay_s, row_s, label_s = decode(images_support)
        assay_q, row_q, label_q = decode(images_query)
        assert len(set(assay_s.tolist() + assay_q.tolist())) == 1
        assert names[int(assay_s[0])] in allowed
        seen_assays.add(int(assay_s[0]))
        for way in (0, 1):  # task label -> one source label, the same in support and query
            source = set(label_s[labels_support == way].tolist()) | set(label_q[labels_query == way].tolist())
            assert len(source) == 1
        assert set(label_s[labels_support == 0].tolist()) != set(label_s[labels_support == 1].tolist())
        first_labels.add(int(label_s[0]))
        assert not set(row_s.tolist()) & set(row_q.tolist())
        assert len(set(row_s.tolist())) == 8
    assert seen_assays == {names.index(a) for a in allowed}
    assert first_labels == {0, 1}  # the label order is shuffled per task


def test_val_and_test_halves_are_disjoint_and_stratified():
    data = coded_data()
    seen = {}
    for split in ('val', 'test'):
        pools = metabolism_dataset.split_pools(data, split)
        seen[split] = {(a, int(r)) for a, classes in pools.items() for c in classes for r in c[:, 1]}
        for assay, classes in pools.items():
            counts = [len(c) for c in classes]
            full = np.bincount(data[assay][1], minlength=2)
            assert all(abs(count - n / 2) <= 0.5 for count, n in zip(counts, full))
    assert not seen['val'] & seen['test']
    assert len(seen['val'] | seen['test']) == 3 * 60


def test_k_plus_q_too_large_names_the_assay():
    data = coded_data({'CYP3A4_Substrate_CarbonMangels': 24})
    with pytest.raises(UserError, match='CYP3A4_Substrate_CarbonMangels in the val split'):
        metabolism_dataset.MoleculeTaskSampler(metabolism_dataset.split_pools(data, 'val'), 2, 5, 5, where='the val split')
    with pytest.raises(UserError, match='--num_way 2'):
        metabolism_dataset.MoleculeTaskSampler(metabolism_dataset.split_pools(data, 'train'), 3, 1, 1)


def test_offline_without_data_names_datadir(tmp_path, monkeypatch):
    import urllib.request

    def offline(*args, **kwargs):
        raise OSError('network unreachable')
    monkeypatch.setattr(urllib.request, 'urlopen', offline)
    with pytest.raises(UserError, match='point --data_dir at them'):
        metabolism_dataset.load_metabolism(str(tmp_path / 'none'))
    assert not (tmp_path / 'none').exists()  # no partial file, nor the folder made for it


def test_mlp_batch_norm_is_per_task():
    x = torch.randn(3 * 5, 7)
    weight, bias = torch.rand(7), torch.randn(7)
    grouped = networks.task_batch_norm(x, weight, bias, num_tasks=3)
    alone = torch.cat([torch.nn.functional.batch_norm(chunk, None, None, weight, bias, training=True)
                       for chunk in x.split(5)])
    assert torch.allclose(grouped, alone, atol=1e-5)


def test_maml_on_the_mlp_vmap_equals_loop():
    params = networks.init_mlp_params((16, 8, 8), num_outputs=2)
    batch = metabolism_dataset.MoleculeTaskSampler(
        {'a': [torch.rand(20, 16).numpy(), torch.rand(20, 16).numpy()]}, 2, 3, 4, seed=1).sample(3)
    grads = []
    for vmap in (False, True):
        learner = maml.MAML(params={k: v.clone() for k, v in params.items()}, forward=networks.mlp_net,
                            num_inner_steps=2, inner_lr=0.1, vmap_tasks=vmap)
        loss, _ = learner.task_metrics(batch, train=True)
        grads.append(torch.autograd.grad(loss, list(learner.inner.meta_parameters.values())))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5)


def train_tiny(folder, log_dir, *flags):
    run_metabolism.main(['--datadir', folder, '--log_dir', log_dir, '--num_train_iterations', '3',
                         '--num_val_tasks', '4', '--num_support', '2', '--num_query', '3', *flags])


@pytest.mark.parametrize('algorithm', ['protonet', 'maml'])
def test_test_flag_uses_the_metabolism_test_split(tmp_path, monkeypatch, capsys, algorithm):
    folder = write_tables(tmp_path / 'data')
    train_tiny(folder, str(tmp_path / 'log'), '--algorithm', algorithm)
    splits = []
    real = metabolism_dataset.split_pools
    monkeypatch.setattr(metabolism_dataset, 'split_pools', lambda data, split, protocol: splits.append(split) or real(data, split, protocol))
    run_metabolism.main(['--test', '--datadir', folder, '--log_dir', str(tmp_path / 'log'), '--checkpoint_step', '2',
                         '--num_support', '2', '--num_query', '3', '--num_test_tasks', '8'])
    assert splits == ['test']
    assert 'Accuracy over 8 test tasks' in capsys.readouterr().out


def test_val_ci95_is_logged(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    train_tiny(write_tables(tmp_path / 'data'), str(tmp_path / 'log'))
    events = EventAccumulator(str(tmp_path / 'log'))
    events.Reload()
    ci = [e.value for e in events.Scalars('val_accuracy/ci95')]
    assert len(ci) == 2 and all(c > 0 for c in ci)  # steps 0 and 2


@pytest.mark.slow
def test_real_tables_short_protonet_run_beats_chance(metabolism_dir, tmp_path):
    # on bits: an untrained MLP's prototypes are near chance, so learning shows (on the default
    # counts they already reach 0.598, and 1000 steps add little)
    command = cli.parse(run_metabolism.PROGRAM, ['--data_dir', metabolism_dir, '--features', 'morgan',
                                                 '--num_train_iterations', '1000'])
    args = command.args
    runtime.seed_everything(0)
    learner = command.build_learner(args, 'cpu')
    optimizer = loop.build_optimizer(learner, args.learning_rate)
    train_sampler = command.build_sampler('train', args, 0, 'cpu')
    val_sampler = command.build_sampler('val', args, evaluation.VAL_SEED, 'cpu')
    before = evaluation.validate(learner, val_sampler, args)
    loop.train(learner, optimizer, train_sampler, val_sampler, args, str(tmp_path))
    after = evaluation.validate(learner, val_sampler, args)
    # measured: 0.530 before, 0.579 +- 0.009 after 1000 steps (chance 0.5)
    assert after['query'] - after['ci95'] > 0.55, after
    assert after['query'] > before['query'] + 0.02, (before, after)


def test_each_tasks_group_is_its_assay_and_fixed_order_labels_class_j_as_label_j():
    data = coded_data()
    for fixed in (False, True):
        sampler = metabolism_dataset.MoleculeTaskSampler(metabolism_dataset.split_pools(data, 'val'), 2, 3, 2, seed=0,
                                                 fixed_labels=fixed)
        batch = sampler.sample(60)
        names = list(metabolism_tables.ASSAYS)
        assay, _, label = decode(batch.images_support)
        assert [sampler.group_names[g] for g in batch.groups.tolist()] == [names[a] for a in assay[:, 0].tolist()]
        same = (label == batch.labels_support).all(1)
        assert same.all() if fixed else 0 < same.sum() < len(batch)  # random order: both orders occur


class AssayBiasedLearner:
    """A learner double: task accuracy depends on the task's assay (read from the coded features)."""
    key_metric, task = 'query', tasks.CLASSIFICATION

    def evaluate(self, batch):
        assay = batch.images_query[:, 0, 0]
        return {'query': assay / 10 + batch.images_query[:, :, 1].mean(1) / 1000, 'loss': assay}


def test_per_assay_results_add_up_to_the_overall_ones(capsys):
    sampler = metabolism_dataset.MoleculeTaskSampler(metabolism_dataset.split_pools(coded_data(), 'val'), 2, 3, 2, seed=0)
    args = argparse.Namespace(num_val_tasks=50, batch_size=7)
    metrics = evaluation.validate(AssayBiasedLearner(), sampler, args)
    sampler.generator.manual_seed(evaluation.VAL_SEED)
    batches = [sampler.sample(min(7, 50 - start)) for start in range(0, 50, 7)]  # the same tasks again
    expected = np.concatenate([AssayBiasedLearner().evaluate(b)['query'].numpy() for b in batches])
    groups = np.concatenate([b.groups.numpy() for b in batches])
    names = list(metabolism_tables.ASSAYS)
    counts = {}
    for assay in metabolism_tables.HELDOUT_ASSAYS:
        chosen = groups == metabolism_tables.HELDOUT_ASSAYS.index(assay)
        counts[assay] = chosen.sum()
        assert metrics[assay] == pytest.approx(expected[chosen].mean())
        assert metrics[assay] == pytest.approx(names.index(assay) / 10, abs=0.1)
    assert sum(counts.values()) == 50 and min(counts.values()) > 0
    assert metrics['query'] == pytest.approx(sum(metrics[a] * counts[a] for a in counts) / 50)
    sampler.generator.manual_seed(evaluation.VAL_SEED)
    evaluation.test(AssayBiasedLearner(), sampler, 50, 7)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith('Accuracy over 50 test tasks: mean')
    assert lines[1] == (f'  {metabolism_tables.HELDOUT_ASSAYS[0]}: mean {metrics[metabolism_tables.HELDOUT_ASSAYS[0]]:.3f}, '
                        f'95% confidence interval {lines[1].split("interval ")[1].split(" ")[0]} over '
                        f'{counts[metabolism_tables.HELDOUT_ASSAYS[0]]} tasks')


def test_per_assay_validation_is_logged(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    train_tiny(write_tables(tmp_path / 'data'), str(tmp_path / 'log'))
    events = EventAccumulator(str(tmp_path / 'log'))
    events.Reload()
    tags = events.Tags()['scalars']
    assert {f'val_accuracy/{a}' for a in metabolism_tables.HELDOUT_ASSAYS} <= set(tags)


def test_each_featurisation_is_cached_and_combinations_concatenate(tmp_path, monkeypatch):
    folder = write_tables(tmp_path, extra=[('CCN', 0), ('NCC', 0)])  # ethylamine twice, merged
    smiles, labels = metabolism_tables.read_table(metabolism_tables.table_path(folder, 'CYP1A2_Veith'))
    for name in ('morgan_counts', 'maccs'):
        features = metabolism_dataset.load_metabolism(folder, download=False, features=name)['CYP1A2_Veith'][0]
        expected, _, _ = metabolism_features.clean_assay(smiles, labels, name)
        assert np.array_equal(features, expected) and features.dtype == np.uint8
        assert os.path.isfile(metabolism_features.cache_path(folder, name))
    monkeypatch.setattr(metabolism_features, 'featurize_tables', lambda *a: pytest.fail('cache not used'))
    both = metabolism_dataset.load_metabolism(folder, download=False, features='morgan_counts+maccs')
    counts, maccs = (metabolism_features.load_tables(folder, name)['CYP1A2_Veith'][0] for name in ('morgan_counts', 'maccs'))
    assert both['CYP1A2_Veith'][0].dtype == np.float32
    assert np.array_equal(both['CYP1A2_Veith'][0], np.concatenate([counts, maccs], 1))
    assert len(both['CYP1A2_Veith'][1]) == len(smiles) - 1


def test_real_features_are_standardised_with_training_statistics_only():
    rng = np.random.default_rng(0)
    data = {a: (rng.normal(5, 3, size=(400, 3)), np.zeros(400, dtype=np.int64)) for a in metabolism_tables.ASSAYS}
    for a in metabolism_tables.TRAIN_ASSAYS:
        data[a][0][:, 2] = 7.0  # a constant column
    data['CYP2C19_Veith'][0][:2] = [[1e30, np.nan, 1.0], [-np.inf, 5.0, 1.0]]
    result = metabolism_features.standardized(data)
    train = np.concatenate([result[a][0] for a in metabolism_tables.TRAIN_ASSAYS])
    assert train.dtype == np.float32
    np.testing.assert_allclose(train[:, :2].mean(0), 0, atol=0.02)
    np.testing.assert_allclose(train[:, :2].std(0), 1, atol=0.03)
    assert (train[:, 2] == 0).all()
    heldout = result['CYP2C19_Veith'][0]
    assert 0 < heldout[0, 0] == train[:, 0].max()  # clipped to the training range
    assert heldout[0, 1] == 0 and heldout[1, 0] == 0  # non-finite: the training mean
    np.testing.assert_allclose(heldout[2:, :2].mean(0), 0, atol=0.2)  # the same distribution, the train scale
    data['CYP2C19_Veith'][0][:] = 1e6  # held-out values leave the statistics alone
    again = metabolism_features.standardized(data)
    for a in metabolism_tables.TRAIN_ASSAYS:
        assert np.array_equal(again[a][0], result[a][0])


def test_features_other_than_the_pickles_are_refused_with_it(tmp_path):
    with open(tmp_path / metabolism_tables.PICKLE_NAME, 'wb') as f:
        pickle.dump({}, f)
    with pytest.raises(UserError, match='--features maccs: .* holds its own features; move it out'):
        metabolism_dataset.load_metabolism(str(tmp_path), features='maccs')


def test_the_network_takes_the_checkpoints_features_at_test(tmp_path, capsys):
    folder = write_tables(tmp_path / 'data')
    train_tiny(folder, str(tmp_path / 'log'), '--features', 'maccs+morgan_counts')
    state = torch.load(tmp_path / 'log' / 'state2.pt', weights_only=False)
    assert state['learner']['network']['params.fc0'].shape == (500, 167 + 1024)
    run_metabolism.main(['--test', '--datadir', folder, '--log_dir', str(tmp_path / 'log'), '--num_support', '2',
                         '--num_query', '3', '--num_test_tasks', '8'])  # no --features: the checkpoint's
    assert 'Accuracy over 8 test tasks' in capsys.readouterr().out
    assert '.features_maccs+morgan_counts' in cli.parse(run_metabolism.PROGRAM, ['--features', 'maccs+morgan_counts']).log_dir


def test_course_protocol_validates_and_tests_on_all_heldout_molecules(capsys):
    data = coded_data()
    val, test = (metabolism_dataset.split_pools(data, split, 'course') for split in ('val', 'test'))
    halves = [metabolism_dataset.split_pools(data, split) for split in ('val', 'test')]
    for assay in metabolism_tables.HELDOUT_ASSAYS:
        for label in range(2):
            assert np.array_equal(val[assay][label], test[assay][label])
            rows = sorted(val[assay][label][:, 1].tolist())
            assert rows == sorted(np.concatenate([h[assay][label][:, 1] for h in halves]).tolist())
    sampler = metabolism_dataset.MoleculeTaskSampler(test, 2, 3, 2, seed=0, meta_batch_ci=True)
    evaluation.test(AssayBiasedLearner(), sampler, 48, 4)
    sampler.generator.manual_seed(0)
    values = np.concatenate([AssayBiasedLearner().evaluate(sampler.sample(4))['query'].numpy() for _ in range(12)])
    means = values.reshape(12, 4).mean(1)  # the course's formula, written out
    expected = 1.96 * np.sqrt(((means - means.mean()) ** 2).mean()) / np.sqrt(48)
    line = capsys.readouterr().out.splitlines()[-1]
    assert line == ("  the course's 95% confidence interval (std of 4-task meta-batch means / sqrt(48)): "
                    f'{expected:.3f}')
    assert stats.course_ci95(values, 4) == pytest.approx(expected)




def test_building_the_features_says_so_and_shows_its_progress(tmp_path, capsys, monkeypatch):
    """The one long phase outside training (minutes for the real tables on a busy CPU): a line, then
    progress bars over the molecules of each table and over the featurisation, on a terminal
    (piped, none: an error stays one line)."""
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    terminal = Terminal()
    monkeypatch.setattr(sys, 'stderr', terminal)
    folder = write_tables(tmp_path)
    metabolism_features.load_tables(folder, 'maccs')
    captured = capsys.readouterr()
    captured = type(captured)(captured.out, terminal.getvalue())
    assert captured.out.startswith(f'computing maccs features for the TDC tables in {folder} (once; cached at ')
    rows = len(ALKANES + ALCOHOLS)
    for bar in [f'reading {assay}' for assay in metabolism_tables.ASSAYS]:
        assert re.search(rf'{bar}: .*\| \d+/{rows} ', captured.err), bar
    assert re.search(r'maccs features: .*\| \d+/\d+ ', captured.err), captured.err
