"""TDC metabolism: eight CYP assays as 2-way few-shot tasks on 1024-bit Morgan
fingerprints (the course's Part 4 and MLTI's "Metabolism" benchmark).

Data path: pickle or .tab tables -> fingerprint cache (bits, uint8) ->
per-assay, per-label pools of one split -> MoleculeTaskSampler -> TaskBatch.
"""
import hashlib
import json
import os
import pickle
import zipfile

import numpy as np
import torch

import networks
import tasks
import util
from util import UserError

ASSAYS = {  # TDC name -> (table file stem, Harvard Dataverse datafile id, from SOURCES.md)
    'CYP1A2_Veith': ('cyp1a2_veith', 4259573),
    'CYP2C19_Veith': ('cyp2c19_veith', 4259576),
    'CYP2C9_Veith': ('cyp2c9_veith', 4259577),
    'CYP2D6_Veith': ('cyp2d6_veith', 4259580),
    'CYP3A4_Veith': ('cyp3a4_veith', 4259582),
    'CYP2C9_Substrate_CarbonMangels': ('cyp2c9_substrate_carbonmangels', 4259584),
    'CYP2D6_Substrate_CarbonMangels': ('cyp2d6_substrate_carbonmangels', 4259578),
    'CYP3A4_Substrate_CarbonMangels': ('cyp3a4_substrate_carbonmangels', 4259581),
}
TRAIN_ASSAYS = ['CYP1A2_Veith', 'CYP3A4_Veith', 'CYP2D6_Veith',
                'CYP2C9_Substrate_CarbonMangels', 'CYP2D6_Substrate_CarbonMangels']
HELDOUT_ASSAYS = ['CYP3A4_Substrate_CarbonMangels', 'CYP2C19_Veith', 'CYP2C9_Veith']
PICKLE_NAME = 'metabolism_data_new.pkl'
DATAVERSE_URL = 'https://dataverse.harvard.edu/api/access/datafile/{}'
TABLE_HEADER = ['Drug_ID', 'Drug', 'Y']
FINGERPRINT_BITS, FINGERPRINT_RADIUS = 1024, 2
SPLIT_SEED = 0  # the val/test halves of the held-out assays are fixed, independent of --seed
CACHE_VERSION = 1
NUM_LABELS = 2


def table_path(data_dir, assay):
    return os.path.join(data_dir, ASSAYS[assay][0] + '.tab')


# ---------------------------------------------------------------- tables -> fingerprints

def read_table(path):
    """A TDC table as (SMILES list, (n,) int64 labels); UserError naming the file if malformed."""
    try:
        with open(path, 'rb') as f:
            text = f.read().decode('utf-8')
    except UnicodeDecodeError as error:
        line = text_line_of(path, error.start)
        raise UserError(f'{path}, line {line}: not UTF-8 text; replace the file with the TDC table') from None
    except OSError as error:
        raise UserError(f'{path} cannot be read ({error.strerror}); replace it with the TDC table') from None
    lines = text.splitlines()
    header = lines[0].split('\t') if lines else []
    if header != TABLE_HEADER:
        raise UserError(f'{path}: header {header} is not {TABLE_HEADER}; replace it with the TDC table')
    smiles, labels = [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split('\t')
        if len(fields) != 3 or fields[2] not in ('0', '1', '0.0', '1.0'):
            raise UserError(f'{path}, line {number}: expected Drug_ID<TAB>SMILES<TAB>0/1; '
                            'replace the file with the TDC table')
        smiles.append(fields[1])
        labels.append(int(float(fields[2])))
    return smiles, np.array(labels, dtype=np.int64)


def text_line_of(path, offset):
    """The 1-based line number of a byte offset in a file."""
    with open(path, 'rb') as f:
        return f.read(offset).count(b'\n') + 1


def fingerprints(smiles):
    """Morgan fingerprints (radius 2, ECFP4) of SMILES strings.

    Returns:
        bits: (n, 1024) uint8 in {0, 1}; rows of unparsable SMILES are zero.
        canonical: n canonical SMILES, None where RDKit cannot parse the input.
    """
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdFingerprintGenerator
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=FINGERPRINT_RADIUS, fpSize=FINGERPRINT_BITS)
    bits = np.zeros((len(smiles), FINGERPRINT_BITS), dtype=np.uint8)
    canonical = []
    RDLogger.DisableLog('rdApp.*')  # we count and report parse failures ourselves
    try:
        for i, text in enumerate(smiles):
            molecule = Chem.MolFromSmiles(text)
            canonical.append(None if molecule is None else Chem.MolToSmiles(molecule))
            if molecule is not None:
                bits[i] = generator.GetFingerprintAsNumPy(molecule)
    finally:
        RDLogger.EnableLog('rdApp.*')
    return bits, canonical


def clean_assay(smiles, labels):
    """Featurise one assay, dropping unparsable SMILES and resolving duplicate molecules.

    Duplicates (same canonical SMILES) with one label keep their first row;
    with conflicting labels all their rows are dropped.
    Returns:
        bits (n', 1024) uint8, labels (n',) int64, and a report dict of counts.
    """
    bits, canonical = fingerprints(smiles)
    rows_of = {}
    for i, key in enumerate(canonical):
        if key is not None:
            rows_of.setdefault(key, []).append(i)
    keep, merged, conflicting = [], 0, 0
    for rows in rows_of.values():
        if len(set(labels[rows].tolist())) > 1:
            conflicting += len(rows)
            continue
        keep.append(rows[0])
        merged += len(rows) - 1
    keep = np.sort(np.array(keep, dtype=np.int64))
    report = {'rows': len(smiles), 'invalid_smiles': canonical.count(None),
              'duplicates_merged': merged, 'conflicting_dropped': conflicting, 'molecules': len(keep)}
    return bits[keep], labels[keep], report


def report_line(assay, report):
    return (f'{assay}: {report["rows"]} rows, {report["invalid_smiles"]} unparsable SMILES dropped, '
            f'{report["duplicates_merged"]} duplicate rows merged, {report["conflicting_dropped"]} rows with '
            f'conflicting labels dropped -> {report["molecules"]} molecules')


def featurize_tables(data_dir):
    """Every assay's table featurised: ({assay: (bits, labels)}, {assay: report})."""
    data, reports = {}, {}
    for assay in ASSAYS:
        smiles, labels = read_table(table_path(data_dir, assay))
        *data[assay], reports[assay] = clean_assay(smiles, labels)
    return data, reports


# ---------------------------------------------------------------- cache

def tables_key(data_dir):
    """Changes whenever a table's bytes or the featurisation change."""
    digest = hashlib.sha256(f'v{CACHE_VERSION}:morgan{FINGERPRINT_RADIUS}:{FINGERPRINT_BITS}'.encode())
    for assay in ASSAYS:
        digest.update(util.file_digest(table_path(data_dir, assay)).encode())
    return digest.hexdigest()


def cache_path(data_dir):
    return util.cache_file(data_dir, f'metabolism_fp{FINGERPRINT_BITS}.cache.npz')


def _content_digest(packed, labels):
    return hashlib.sha256(packed.tobytes() + labels.tobytes()).hexdigest()


def _write_cache(path, key, data, reports):
    names = list(data)
    packed = np.concatenate([np.packbits(data[a][0], axis=1) for a in names])
    labels = np.concatenate([data[a][1] for a in names])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f'{path}.{os.getpid()}.part.npz'
    np.savez(partial, key=key, assays=np.array(names), counts=np.array([len(data[a][1]) for a in names]),
             packed=packed, labels=labels, reports=json.dumps(reports), digest=_content_digest(packed, labels))
    os.replace(partial, path)


def _read_cache(path, key):
    """({assay: (bits, labels)}, reports) if the cache is intact and built from these tables, else None."""
    try:
        with np.load(path, allow_pickle=False) as cache:
            if str(cache['key']) != key:
                return None
            packed, labels = cache['packed'], cache['labels']
            if str(cache['digest']) != _content_digest(packed, labels):
                return None
            names, counts = [str(a) for a in cache['assays']], cache['counts']
            reports = json.loads(str(cache['reports']))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
        return None
    bits = np.unpackbits(packed, axis=1, count=FINGERPRINT_BITS)
    ends = np.cumsum(counts)
    data = {a: (bits[end - n:end], labels[end - n:end]) for a, n, end in zip(names, counts, ends)}
    return data, reports


def load_tables(data_dir):
    """The featurised tables, from the cache when it matches them; prints the cleaning report on a build."""
    key = tables_key(data_dir)
    path = cache_path(data_dir)
    cached = _read_cache(path, key) if os.path.exists(path) else None
    if cached is not None:
        return cached[0]
    print(f'computing Morgan fingerprints for the TDC tables in {data_dir} (once; cached at {path})')
    data, reports = featurize_tables(data_dir)
    for assay, report in reports.items():
        print('  ' + report_line(assay, report))
    _write_cache(path, key, data, reports)
    return data


# ---------------------------------------------------------------- pickle, download, entry point

def _assay_of_key(key):
    """The TDC assay a pickle key names ('CYP2C9_Substrate', 'cyp2c9_veith', ...), or None."""
    text = str(key).lower()
    for assay, (stem, _) in ASSAYS.items():
        if text in (assay.lower(), stem, assay.lower().replace('_carbonmangels', '')):
            return assay
    return None


def load_pickle(path):
    """The course/MLTI pickle: {assay: {'feature': (n, 1024), 'label': (n,)}} -> {assay: (features, labels)}."""
    try:
        with open(path, 'rb') as f:
            raw = pickle.load(f)
        data = {}
        for key, entry in raw.items():
            assay = _assay_of_key(key)
            if assay is not None:
                features = np.asarray(entry['feature'])
                labels = np.asarray(entry['label']).reshape(-1).astype(np.int64)
                if features.shape != (len(labels), FINGERPRINT_BITS):
                    raise ValueError(f'{key}: features of shape {features.shape} for {len(labels)} labels')
                binary = np.isin(features, (0, 1)).all()
                data[assay] = (features.astype(np.uint8 if binary else np.float32), labels)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, KeyError, TypeError, ValueError) as error:
        raise UserError(f'{path} is not the metabolism pickle ({error}); delete it to use the .tab tables') from None
    missing = [a for a in ASSAYS if a not in data]
    if missing:
        raise UserError(f'{path} lacks the assays {", ".join(missing)}; delete it to use the .tab tables')
    return data


def download_tables(data_dir):
    """Fetch the missing TDC tables from Harvard Dataverse, each checked and renamed when complete."""
    for assay, (stem, file_id) in ASSAYS.items():
        target = table_path(data_dir, assay)
        if os.path.isfile(target):
            continue
        try:
            util.download_file(DATAVERSE_URL.format(file_id), target, check=read_table)
        except (OSError, ValueError, UserError) as error:
            raise UserError(f'could not download {stem}.tab ({error}); put the eight TDC CYP tables '
                            f'(<name>.tab) or {PICKLE_NAME} in {data_dir}, or point --data_dir at them') from None


def load_metabolism(data_dir='./data/metabolism', download=True):
    """All eight assays: {assay: (features (n, 1024) uint8 bits, labels (n,) int64)}.

    Sources in order: the course's pickle, the .tab tables, a download.
    """
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise UserError(f'--data_dir {data_dir} is a file; name the folder that holds the data')
    pickle_path = os.path.join(data_dir, PICKLE_NAME)
    if os.path.isfile(pickle_path):
        return load_pickle(pickle_path)
    if not all(os.path.isfile(table_path(data_dir, a)) for a in ASSAYS):
        if not download:
            raise UserError(f'no metabolism data in {data_dir}: put {PICKLE_NAME} or the eight TDC CYP tables '
                            '(<name>.tab) there, or point --data_dir at them')
        download_tables(data_dir)
    return load_tables(data_dir)


# ---------------------------------------------------------------- splits and tasks

def heldout_halves(labels, seed=SPLIT_SEED):
    """Split one held-out assay's molecules, per label, into disjoint halves: (val rows, test rows)."""
    rng = np.random.default_rng(seed)
    val, test = [], []
    for label in range(NUM_LABELS):
        rows = rng.permutation(np.flatnonzero(labels == label))
        val.append(rows[:len(rows) // 2])
        test.append(rows[len(rows) // 2:])
    return np.sort(np.concatenate(val)), np.sort(np.concatenate(test))


def split_pools(data, split):
    """{assay: [label-0 features, label-1 features]} of one split ('train', 'val' or 'test')."""
    if split == 'train':
        chosen = {a: np.arange(len(data[a][1])) for a in TRAIN_ASSAYS}
    else:
        chosen = {a: heldout_halves(data[a][1])[0 if split == 'val' else 1] for a in HELDOUT_ASSAYS}
    pools = {}
    for assay, rows in chosen.items():
        features, labels = data[assay][0][rows], data[assay][1][rows]
        pools[assay] = [features[labels == label] for label in range(NUM_LABELS)]
    return pools


class MoleculeTaskSampler:
    """2-way tasks (label 0 vs label 1) within one assay chosen uniformly at random.

    The two labels come in random order per task, as task labels 0 and 1
    (fixed_labels: task label j is assay label j, as the course's generator
    does); K support and Q query molecules per label are disjoint draws without
    replacement. Each task's group is its assay (group_names). All randomness
    comes from one CPU generator (checkpointed).
    """

    def __init__(self, pools, num_way, num_support, num_query, seed=0, device='cpu', where='the split',
                 fixed_labels=False):
        if num_way != NUM_LABELS:
            raise UserError(f'--num_way {num_way}: metabolism tasks are 2-way (label 0 vs label 1); use --num_way 2')
        if min(num_support, num_query) < 1:
            raise UserError('--num_support and --num_query must be at least 1')
        for assay, classes in pools.items():
            smallest = min(len(c) for c in classes)
            if num_support + num_query > smallest:
                raise UserError(f'--num_support {num_support} + --num_query {num_query} exceeds the {smallest} '
                                f'molecules of the smaller label of {assay} in {where}; lower them')
        self.assays = self.group_names = list(pools)
        self.fixed_labels = fixed_labels
        sizes = [len(c) for a in self.assays for c in pools[a]]
        self.sizes = torch.tensor(sizes).view(len(self.assays), NUM_LABELS)
        self.offsets = (torch.tensor([0] + sizes[:-1]).cumsum(0)).view(len(self.assays), NUM_LABELS)
        self.examples = torch.from_numpy(np.concatenate([c for a in self.assays for c in pools[a]])).to(device)
        self.num_support, self.num_query = num_support, num_query
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, batch_size):
        """A TaskBatch: images_support (B, 2*K, 1024) float32 bits, labels_support (B, 2*K), ..."""
        g, draw = self.generator, self.num_support + self.num_query
        rows = torch.empty(batch_size, NUM_LABELS, draw, dtype=torch.int64)
        assays = torch.randint(len(self.assays), (batch_size,), generator=g)
        for task, assay in enumerate(assays.tolist()):
            order = range(NUM_LABELS) if self.fixed_labels else torch.randperm(NUM_LABELS, generator=g).tolist()
            for way, label in enumerate(order):
                picks = torch.randperm(int(self.sizes[assay, label]), generator=g)[:draw]
                rows[task, way] = self.offsets[assay, label] + picks
        batch = tasks.task_batch_from_draws(self.examples[rows.to(self.examples.device)], self.num_support)
        batch.groups = assays.to(self.examples.device)
        return batch


# ---------------------------------------------------------------- the dataset interface

NAME = 'metabolism'
TASK = tasks.CLASSIFICATION
DEFAULTS = dict(num_way=2, num_support=[5], num_query=10, batch_size=4, num_train_iterations=8000,
                num_val_tasks=600, inner_lr=0.1, data_dir='./data/metabolism')  # the course's Part 4
ALGORITHM_DEFAULTS = {'protonet': dict(learning_rate=0.0005), 'maml': dict(learning_rate=0.0005)}
ONE_ENCODER_CALL_PER_BATCH = True  # the MLP is too small to loop over tasks
CHECKPOINT_FLAGS = ('label_order',)  # at --test, the trained model's value
ENCODER_SIZES = (FINGERPRINT_BITS, 500, 500)  # as in the course and MLTI


def add_args(parser):
    """The metabolism flags."""
    parser.add_argument('--label_order', choices=['random', 'fixed'], default='random',
                        help="task label j is assay label j (fixed, the course's generator) or a random order "
                             'per task (the default: a model cannot learn which label is active)')


def check_args(args):
    pass


def build_sampler(split, args, seed, device):
    """The sampler of one split ('train', 'val' or 'test') for the run's flags."""
    pools = split_pools(load_metabolism(args.data_dir), split)
    return MoleculeTaskSampler(pools, args.num_way, args.num_support, args.num_query, seed, device,
                               f'the metabolism {split} split', fixed_labels=args.label_order == 'fixed')


after_test = None
benchmark_test = None


def network(args, num_outputs=None):
    """(params, forward): 2 x [Linear -> BatchNorm1d -> LeakyReLU], (T*M, 1024) -> (T*M, 500)
    features, or (T*M, num_outputs) logits through a linear head."""
    params = networks.init_mlp_params(ENCODER_SIZES, num_outputs=num_outputs)
    return params, networks.mlp_features if num_outputs is None else networks.mlp_net
