"""Molecule features of the TDC tables (--features): Morgan bits or counts, FCFP4, MACCS,
RDKit's 2D descriptors, or '+'-combinations; each featurisation computed once, each
distinct molecule once, and cached."""
import hashlib
import json
import os

import numpy as np
from tqdm import tqdm

from fewshot import files
from fewshot.datasets.metabolism.tables import ASSAYS, TRAIN_ASSAYS, read_table, table_path
from fewshot.errors import UserError

CACHE_VERSION = 3

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


def with_progress(items, description):
    """items, iterated under a progress bar on stderr when description is given (a long build) and
    stderr is a terminal (piped, an error stays one line)."""
    return items if description is None else tqdm(items, desc=description, unit='molecule', leave=False,
                                                   disable=None)


def parse_smiles(smiles, progress=None):
    """RDKit molecules and canonical SMILES of SMILES strings (None for both where unparsable);
    progress: a progress bar's description."""
    from rdkit import Chem, RDLogger
    RDLogger.DisableLog('rdApp.*')  # we count and report parse failures ourselves
    try:
        molecules = [Chem.MolFromSmiles(text) for text in with_progress(smiles, progress)]
    finally:
        RDLogger.EnableLog('rdApp.*')
    return molecules, [None if m is None else Chem.MolToSmiles(m) for m in molecules]


def featurize(molecules, name, progress=None):
    """(n, width) features of RDKit molecules: uint8 for bits and counts, float64 for 'rdkit2d';
    progress: a progress bar's description."""
    function = featurizer(name)
    rows = [function(m) for m in with_progress(molecules, progress)]
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
        molecules, canonical = parse_smiles(smiles, progress=f'reading {assay}')
        keep, reports[assay] = kept_rows(canonical, labels)
        cleaned[assay] = ([canonical[i] for i in keep], labels[keep])
        for i in keep:
            molecule_of.setdefault(canonical[i], molecules[i])
    keys = list(molecule_of)
    values = featurize([molecule_of[k] for k in keys], name, progress=f'{name} features')
    row_of = {key: i for i, key in enumerate(keys)}
    data = {a: (values[[row_of[k] for k in keys_a]], labels) for a, (keys_a, labels) in cleaned.items()}
    return data, reports


# ---------------------------------------------------------------- cache

def tables_key(data_dir, name=DEFAULT_FEATURES):
    """Changes whenever a table's bytes or the featurisation change."""
    digest = hashlib.sha256(f'v{CACHE_VERSION}:{name}:{_width(name)}'.encode())
    for assay in ASSAYS:
        digest.update(files.file_digest(table_path(data_dir, assay)).encode())
    return digest.hexdigest()


def cache_path(data_dir, name=DEFAULT_FEATURES):
    return files.cache_file(data_dir, f'metabolism_{name}.cache.npz')


def _write_cache(path, key, name, data, reports):
    names = list(data)
    features = np.concatenate([data[a][0] for a in names])
    stored = np.packbits(features, axis=1) if FEATURES[name][0] == 'bits' else features
    files.write_keyed_arrays(path, key, assays=np.array(names), counts=np.array([len(data[a][1]) for a in names]),
                             width=features.shape[1], features=stored, labels=np.concatenate([data[a][1] for a in names]),
                             reports=json.dumps(reports))


def _read_cache(path, key, name):
    """{assay: (features, labels)} if the cache is intact and built from these tables, else None."""
    cache = files.read_keyed_arrays(path, key)
    if cache is None:
        return None
    names, counts, width = [str(a) for a in cache['assays']], cache['counts'], int(cache['width'])
    stored, labels = cache['features'], cache['labels']
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
