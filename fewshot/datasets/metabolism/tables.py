"""The TDC metabolism tables: the eight CYP assays (SMILES, label), read from the .tab
tables, the course's pickle, or downloaded from Harvard Dataverse."""
import os
import pickle

import numpy as np

from fewshot import files
from fewshot.errors import UserError

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
FINGERPRINT_BITS = 1024  # the course's pickle's features


def table_path(data_dir, assay):
    return os.path.join(data_dir, ASSAYS[assay][0] + '.tab')


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
            files.download_file(DATAVERSE_URL.format(file_id), target, check=read_table)
        except (OSError, ValueError, UserError) as error:
            raise UserError(f'could not download {stem}.tab ({error}); put the eight TDC CYP tables '
                            f'(<name>.tab) or {PICKLE_NAME} in {data_dir}, or point --data_dir at them') from None
