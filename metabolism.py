"""TDC metabolism: eight CYP assays as 2-way few-shot tasks on molecule features
(the course's Part 4 and MLTI's "Metabolism" benchmark); by default 1024 Morgan
counts, `--features` picks others.

Data path: pickle or .tab tables -> one cache per featurisation -> per-assay,
per-label pools of one split -> MoleculeTaskSampler -> TaskBatch.
"""
import functools
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
FINGERPRINT_BITS = 1024  # the course's pickle and the default features
SPLIT_SEED = 0  # the val/test halves of the held-out assays are fixed, independent of --seed
CACHE_VERSION = 2
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


# Featurisations (--features): name -> (kind, width). Kinds: 'bits' (0/1, bit-packed in the
# cache), 'counts' (uint8, clipped at 255) and 'real' (float32, standardised at load with the
# training assays' statistics). A '+'-joined list of names concatenates them.
FEATURES = {
    'morgan': ('bits', 1024),          # Morgan radius 2 (ECFP4), 1024 bits
    'morgan_counts': ('counts', 1024),  # the same environments, counted (the default: docs/results.md)
    'morgan3': ('bits', 1024),         # radius 3 (ECFP6)
    'morgan2048': ('bits', 2048),      # radius 2, 2048 bits
    'fcfp4': ('bits', 1024),           # feature-invariant Morgan, radius 2 (FCFP4)
    'maccs': ('bits', 167),            # the 166 MACCS keys (bit 0 unused)
    'rdkit2d': ('real', None),         # RDKit's 2D descriptors (Descriptors.CalcMolDescriptors)
}
DEFAULT_FEATURES = 'morgan_counts'  # measured 0.011 above 'morgan' over three seeds (docs/results.md)
CLIP_COUNT = 255
DESCRIPTOR_QUANTILE = 0.005  # real features are clipped to the training assays' 0.5%-99.5% range


def feature_names(features):
    """'morgan+rdkit2d' -> ['morgan', 'rdkit2d']; UserError naming --features for an unknown name."""
    names = features.split('+')
    unknown = [n for n in names if n not in FEATURES]
    if unknown or len(set(names)) != len(names):
        raise UserError(f'--features {features}: give one or more of {", ".join(FEATURES)} joined by +, '
                        'each once')
    return names


def feature_width(features):
    """The length of a molecule's feature vector for --features."""
    return sum(_width(n) for n in feature_names(features))


def _width(name):
    """The width of one featurisation (rdkit2d: as many as this RDKit's descriptors)."""
    if FEATURES[name][1] is not None:
        return FEATURES[name][1]
    from rdkit.Chem import Descriptors
    return len(Descriptors._descList)


def featurizer(name):
    """mol -> (width,) numpy row of the featurisation `name` (one of FEATURES)."""
    from rdkit.Chem import Descriptors, MACCSkeys, rdFingerprintGenerator
    morgan = rdFingerprintGenerator.GetMorganGenerator
    if name == 'maccs':
        return lambda mol: np.array(list(MACCSkeys.GenMACCSKeys(mol)), dtype=np.uint8)
    if name == 'rdkit2d':
        return lambda mol: np.array(list(Descriptors.CalcMolDescriptors(mol).values()), dtype=np.float64)
    generator = {
        'morgan': lambda: morgan(radius=2, fpSize=1024),
        'morgan_counts': lambda: morgan(radius=2, fpSize=1024),
        'morgan3': lambda: morgan(radius=3, fpSize=1024),
        'morgan2048': lambda: morgan(radius=2, fpSize=2048),
        'fcfp4': lambda: morgan(radius=2, fpSize=1024,
                                atomInvariantsGenerator=rdFingerprintGenerator.GetMorganFeatureAtomInvGen()),
    }[name]()
    if name == 'morgan_counts':
        return lambda mol: np.minimum(generator.GetCountFingerprintAsNumPy(mol), CLIP_COUNT).astype(np.uint8)
    return generator.GetFingerprintAsNumPy


def parse_smiles(smiles):
    """RDKit molecules and canonical SMILES of SMILES strings (None for both where unparsable)."""
    from rdkit import Chem, RDLogger
    RDLogger.DisableLog('rdApp.*')  # we count and report parse failures ourselves
    try:
        molecules = [Chem.MolFromSmiles(text) for text in smiles]
    finally:
        RDLogger.EnableLog('rdApp.*')
    return molecules, [None if m is None else Chem.MolToSmiles(m) for m in molecules]


def featurize(molecules, name):
    """(n, width) features of RDKit molecules: uint8 for bits and counts, float64 for 'rdkit2d'."""
    function = featurizer(name)
    rows = [function(m) for m in molecules]
    empty_type = np.float64 if FEATURES[name][0] == 'real' else np.uint8
    return np.stack(rows) if rows else np.zeros((0, _width(name)), dtype=empty_type)


def fingerprints(smiles, name=DEFAULT_FEATURES):
    """Features (--features name) of SMILES strings.

    Returns:
        features: (n, width); rows of unparsable SMILES are zero.
        canonical: n canonical SMILES, None where RDKit cannot parse the input.
    """
    molecules, canonical = parse_smiles(smiles)
    parsed = [i for i, m in enumerate(molecules) if m is not None]
    values = featurize([molecules[i] for i in parsed], name)
    features = np.zeros((len(smiles), values.shape[1]), dtype=values.dtype)
    features[parsed] = values
    return features, canonical


def kept_rows(canonical, labels):
    """Rows to keep of one assay: unparsable SMILES dropped; duplicates (same canonical
    SMILES) with one label keep their first row, with conflicting labels all are dropped.
    Returns (sorted (n',) int64 rows, report dict of counts)."""
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
    report = {'rows': len(canonical), 'invalid_smiles': canonical.count(None),
              'duplicates_merged': merged, 'conflicting_dropped': conflicting, 'molecules': len(keep)}
    return keep, report


def clean_assay(smiles, labels, name=DEFAULT_FEATURES):
    """Featurise one assay (kept_rows's cleaning): (features (n', width), labels (n',) int64, report)."""
    features, canonical = fingerprints(smiles, name)
    keep, report = kept_rows(canonical, labels)
    return features[keep], labels[keep], report


def report_line(assay, report):
    return (f'{assay}: {report["rows"]} rows, {report["invalid_smiles"]} unparsable SMILES dropped, '
            f'{report["duplicates_merged"]} duplicate rows merged, {report["conflicting_dropped"]} rows with '
            f'conflicting labels dropped -> {report["molecules"]} molecules')


def featurize_tables(data_dir, name):
    """Every assay's table cleaned and featurised, each distinct molecule once:
    ({assay: (features, labels)}, {assay: report})."""
    cleaned, reports, molecule_of = {}, {}, {}
    for assay in ASSAYS:
        smiles, labels = read_table(table_path(data_dir, assay))
        molecules, canonical = parse_smiles(smiles)
        keep, reports[assay] = kept_rows(canonical, labels)
        cleaned[assay] = ([canonical[i] for i in keep], labels[keep])
        for i in keep:
            molecule_of.setdefault(canonical[i], molecules[i])
    keys = list(molecule_of)
    values = featurize([molecule_of[k] for k in keys], name)
    row_of = {key: i for i, key in enumerate(keys)}
    data = {a: (values[[row_of[k] for k in keys_a]], labels) for a, (keys_a, labels) in cleaned.items()}
    return data, reports


# ---------------------------------------------------------------- cache

def tables_key(data_dir, name=DEFAULT_FEATURES):
    """Changes whenever a table's bytes or the featurisation change."""
    digest = hashlib.sha256(f'v{CACHE_VERSION}:{name}:{_width(name)}'.encode())
    for assay in ASSAYS:
        digest.update(util.file_digest(table_path(data_dir, assay)).encode())
    return digest.hexdigest()


def cache_path(data_dir, name=DEFAULT_FEATURES):
    return util.cache_file(data_dir, f'metabolism_{name}.cache.npz')


def _content_digest(stored, labels):
    return hashlib.sha256(stored.tobytes() + labels.tobytes()).hexdigest()


def _write_cache(path, key, name, data, reports):
    names = list(data)
    features = np.concatenate([data[a][0] for a in names])
    stored = np.packbits(features, axis=1) if FEATURES[name][0] == 'bits' else features
    labels = np.concatenate([data[a][1] for a in names])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f'{path}.{os.getpid()}.part.npz'
    np.savez(partial, key=key, assays=np.array(names), counts=np.array([len(data[a][1]) for a in names]),
             width=features.shape[1], features=stored, labels=labels, reports=json.dumps(reports),
             digest=_content_digest(stored, labels))
    os.replace(partial, path)


def _read_cache(path, key, name):
    """{assay: (features, labels)} if the cache is intact and built from these tables, else None."""
    try:
        with np.load(path, allow_pickle=False) as cache:
            if str(cache['key']) != key:
                return None
            stored, labels = cache['features'], cache['labels']
            if str(cache['digest']) != _content_digest(stored, labels):
                return None
            names, counts, width = [str(a) for a in cache['assays']], cache['counts'], int(cache['width'])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
        return None
    features = np.unpackbits(stored, axis=1, count=width) if FEATURES[name][0] == 'bits' else stored
    ends = np.cumsum(counts)
    return {a: (features[end - n:end], labels[end - n:end]) for a, n, end in zip(names, counts, ends)}


def load_tables(data_dir, name=DEFAULT_FEATURES):
    """One featurisation of the tables, from its cache when it matches them; prints the
    cleaning report when it builds the cache."""
    key = tables_key(data_dir, name)
    path = cache_path(data_dir, name)
    cached = _read_cache(path, key, name) if os.path.exists(path) else None
    if cached is not None:
        return cached
    print(f'computing {name} features for the TDC tables in {data_dir} (once; cached at {path})')
    data, reports = featurize_tables(data_dir, name)
    for assay, report in reports.items():
        print('  ' + report_line(assay, report))
    _write_cache(path, key, name, data, reports)
    return data


def standardized(data):
    """Real features clipped to the training assays' central range (DESCRIPTOR_QUANTILE) and
    standardised with their mean and std; non-finite values become the mean (0).
    {assay: ((n, D) float64, labels)} -> {assay: ((n, D) float32, labels)}."""
    train = np.concatenate([data[a][0] for a in TRAIN_ASSAYS])
    train = np.where(np.isfinite(train), train, np.nan)
    low, high = np.nanquantile(train, [DESCRIPTOR_QUANTILE, 1 - DESCRIPTOR_QUANTILE], axis=0)
    clipped = np.clip(train, low, high)
    mean, std = np.nanmean(clipped, axis=0), np.nanstd(clipped, axis=0)
    mean, std = np.nan_to_num(mean), np.where(np.isfinite(std) & (std > 0), std, 1.0)

    def transform(x):
        x = (np.clip(np.where(np.isfinite(x), x, np.nan), low, high) - mean) / std
        return np.nan_to_num(x, nan=0.0).astype(np.float32)
    return {a: (transform(x), y) for a, (x, y) in data.items()}


def load_features(data_dir, features):
    """--features of the tables: {assay: (features (n, width), labels)}; bits and counts stay
    uint8 for one featurisation, a '+'-list is concatenated as float32."""
    parts = []
    for name in feature_names(features):
        data = load_tables(data_dir, name)
        parts.append(standardized(data) if FEATURES[name][0] == 'real' else data)
    if len(parts) == 1:
        return parts[0]
    return {a: (np.concatenate([p[a][0].astype(np.float32) for p in parts], axis=1), parts[0][a][1])
            for a in ASSAYS}


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


def load_metabolism(data_dir='./data/metabolism', download=True, features=DEFAULT_FEATURES):
    """All eight assays: {assay: (features (n, width), labels (n,) int64)}; the default
    features are (n, 1024) uint8 Morgan counts.

    Sources in order: the course's pickle (its own features), the .tab tables, a download.
    """
    feature_names(features)
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise UserError(f'--data_dir {data_dir} is a file; name the folder that holds the data')
    pickle_path = os.path.join(data_dir, PICKLE_NAME)
    if os.path.isfile(pickle_path):
        if features != DEFAULT_FEATURES:
            raise UserError(f'--features {features}: {pickle_path} holds its own features; move it out of '
                            f'{data_dir} to compute {features} from the .tab tables')
        return load_pickle(pickle_path)
    if not all(os.path.isfile(table_path(data_dir, a)) for a in ASSAYS):
        if not download:
            raise UserError(f'no metabolism data in {data_dir}: put {PICKLE_NAME} or the eight TDC CYP tables '
                            '(<name>.tab) there, or point --data_dir at them')
        download_tables(data_dir)
    return load_features(data_dir, features)


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


def split_pools(data, split, protocol='halves'):
    """{assay: [label-0 features, label-1 features]} of one split ('train', 'val' or 'test').
    protocol 'halves': validation and test on disjoint halves of each held-out assay;
    'course': both on all of its molecules, as the course's generator does."""
    if split == 'train':
        chosen = {a: np.arange(len(data[a][1])) for a in TRAIN_ASSAYS}
    elif protocol == 'course':
        chosen = {a: np.arange(len(data[a][1])) for a in HELDOUT_ASSAYS}
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
    replacement. Each task's group is its assay (group_names), and its
    classes are assay * 2 + assay label (num_classes in all). All randomness
    comes from one CPU generator (checkpointed). meta_batch_ci: --test also
    reports the course's CI over meta-batch means.
    """

    def __init__(self, pools, num_way, num_support, num_query, seed=0, device='cpu', where='the split',
                 fixed_labels=False, meta_batch_ci=False):
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
        self.num_classes = NUM_LABELS * len(self.assays)
        self.fixed_labels, self.meta_batch_ci = fixed_labels, meta_batch_ci
        sizes = [len(c) for a in self.assays for c in pools[a]]
        self.sizes = torch.tensor(sizes).view(len(self.assays), NUM_LABELS)
        self.offsets = (torch.tensor([0] + sizes[:-1]).cumsum(0)).view(len(self.assays), NUM_LABELS)
        self.examples = torch.from_numpy(np.concatenate([c for a in self.assays for c in pools[a]])).to(device)
        self.num_support, self.num_query = num_support, num_query
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, batch_size):
        """A TaskBatch: images_support (B, 2*K, D) float32 features, labels_support (B, 2*K), ...,
        groups (B,) assays, classes (B, 2)."""
        g, draw = self.generator, self.num_support + self.num_query
        rows = torch.empty(batch_size, NUM_LABELS, draw, dtype=torch.int64)
        assays = torch.randint(len(self.assays), (batch_size,), generator=g)
        classes = torch.empty(batch_size, NUM_LABELS, dtype=torch.int64)
        for task, assay in enumerate(assays.tolist()):
            order = range(NUM_LABELS) if self.fixed_labels else torch.randperm(NUM_LABELS, generator=g).tolist()
            for way, label in enumerate(order):
                picks = torch.randperm(int(self.sizes[assay, label]), generator=g)[:draw]
                rows[task, way] = self.offsets[assay, label] + picks
                classes[task, way] = assay * NUM_LABELS + label
        device = self.examples.device
        batch = tasks.task_batch_from_draws(self.examples[rows.to(device)], self.num_support)
        batch.groups, batch.classes = assays.to(device), classes.to(device)
        return batch


# ---------------------------------------------------------------- the dataset interface

NAME = 'metabolism'
TASK = tasks.CLASSIFICATION
DEFAULTS = dict(num_way=2, num_support=[5], num_query=10, batch_size=4, num_train_iterations=8000,
                num_val_tasks=600, inner_lr=0.1, data_dir='./data/metabolism')  # the course's Part 4
ALGORITHM_DEFAULTS = {'protonet': dict(learning_rate=0.0005), 'maml': dict(learning_rate=0.0005),
                      'baseline': dict(learning_rate=0.0005)}
ONE_ENCODER_CALL_PER_BATCH = True  # the MLP is too small to loop over tasks
CHECKPOINT_FLAGS = ('label_order', 'features', 'validation_protocol')  # at --test, the trained model's values
HIDDEN_SIZES = (500, 500)  # as in the course and MLTI
NUM_TRAIN_CLASSES = NUM_LABELS * len(TRAIN_ASSAYS)  # the classes of the training sampler's tasks


def add_args(parser):
    """The metabolism flags."""
    parser.add_argument('--label_order', choices=['random', 'fixed'], default='random',
                        help="task label j is assay label j (fixed, the course's generator) or a random order "
                             'per task (the default: a model cannot learn which label is active)')
    parser.add_argument('--features', default=DEFAULT_FEATURES, metavar='NAME[+NAME...]',
                        help=f'molecule features, computed once per name and cached: {", ".join(FEATURES)}, '
                             f'or several joined by + (default {DEFAULT_FEATURES}: Morgan radius 2, 1024 counts; '
                             "with the course's pickle in --data_dir, its features)")
    parser.add_argument('--validation_protocol', choices=['halves', 'course'], default='halves',
                        help='halves: validate and test on disjoint halves of the held-out assays; course: both on '
                             "all their molecules, as the course did (checkpoints picked on test data), --test "
                             "also printing the course's CI over meta-batch means")
    parser.add_argument('--dropout', type=util.probability, default=0.0,
                        help='dropout after each hidden layer of the MLP while training (0: none)')


def check_args(args):
    feature_names(args.features)


def build_sampler(split, args, seed, device):
    """The sampler of one split ('train', 'val' or 'test') for the run's flags."""
    pools = split_pools(load_metabolism(args.data_dir, features=args.features), split, args.validation_protocol)
    return MoleculeTaskSampler(pools, args.num_way, args.num_support, args.num_query, seed, device,
                               f'the metabolism {split} split', fixed_labels=args.label_order == 'fixed',
                               meta_batch_ci=args.validation_protocol == 'course')


after_test = None
benchmark_test = None


def network(args, num_outputs=None):
    """(params, forward): 2 x [Linear -> BatchNorm1d -> LeakyReLU (-> dropout)], (T*M, D) features
    of --features -> (T*M, 500), or (T*M, num_outputs) logits through a linear head."""
    params = networks.init_mlp_params((feature_width(args.features), *HIDDEN_SIZES), num_outputs=num_outputs)
    forward = networks.mlp_features if num_outputs is None else networks.mlp_net
    return params, functools.partial(forward, dropout=args.dropout) if args.dropout else forward
