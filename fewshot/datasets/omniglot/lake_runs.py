"""Lake et al.'s (2015) one-shot classification benchmark: 20 runs of 20-way
within-alphabet one-shot classification of images_evaluation characters, where
people make 4.5% errors.

    python protonet.py --test --log_dir D --lake_runs              # the official all_runs.zip in --data_dir
    python protonet.py --test --log_dir D --lake_runs PATH         # a copy: the zip or its extracted folder

A run is a folder runNN with training/ (one image per class), test/ (one image
per class) and class_labels.txt, one line per test image:
'runNN/test/itemMM.png runNN/training/classKK.png'. Each run is scored as one
20-way 1-shot task with one query per class; its error rate is the fraction of
test images given the wrong training image's class.
"""
import os
import posixpath
import random
import zipfile

import numpy as np
import torch

from fewshot import files, tasks
from fewshot.datasets.omniglot.source import IMAGE_SIZE, png_to_ink
from fewshot.errors import UserError

RUNS_ZIP = 'all_runs.zip'
RUNS_MD5 = 'e8996daecdf12afeeb4a53a179f06b19'
RUNS_URL = 'https://github.com/brendenlake/omniglot/raw/master/python/one-shot-classification/all_runs.zip'
LABELS_FILE = 'class_labels.txt'
NUM_RUNS, NUM_WAY = 20, 20


def official_runs(data_dir):
    """The path of all_runs.zip in data_dir, downloaded (md5-checked, with a progress bar) when absent."""
    target = os.path.join(data_dir, RUNS_ZIP)
    if os.path.isfile(target):
        return target
    try:
        files.download_file(RUNS_URL, target, files.md5_check(RUNS_ZIP, RUNS_MD5))
    except (OSError, ValueError) as error:
        raise UserError(f'could not download Lake\'s runs ({error}); put {RUNS_ZIP} in {data_dir} or give '
                        '--lake_runs PATH (the zip or its extracted folder)') from None
    return target


def build_runs(source_zip, target, seed=0, num_runs=NUM_RUNS, alphabets=None):
    """Write num_runs runs in all_runs.zip's layout to the zip `target`, from the 105x105 drawings of
    an official zip (images_evaluation.zip; images_background.zip with its held-out alphabets for
    model selection): each run NUM_WAY characters of one alphabet (of `alphabets`, if given), the
    training image drawn by one person and the test image by another, test items shuffled.

    Returns, per run, [(alphabet/character, training drawing, test drawing)] in class order and
    the class of each test item in item order (drawings index the character's sorted files)."""
    rng = random.Random(seed)
    with zipfile.ZipFile(source_zip) as source:
        characters = {}
        for entry in source.namelist():
            parts = entry.split('/')
            if entry.endswith('.png') and len(parts) == 4 and (alphabets is None or parts[1] in alphabets):
                characters.setdefault(parts[1], {}).setdefault(parts[2], []).append(entry)
        candidates = sorted(a for a in characters if len(characters[a]) >= NUM_WAY)
        if not candidates:
            raise UserError(f'{source_zip} holds no alphabet of {NUM_WAY} characters to build runs from')
        runs = []

        def write(file):
            with zipfile.ZipFile(file, 'w') as out:
                runs.extend(_write_runs(out, source, characters, candidates, rng, num_runs))

        files.atomic_write(target, write)  # an interruption leaves no partial zip behind
    return runs


def _write_runs(out, source, characters, candidates, rng, num_runs):
    """Draw num_runs runs and write their images and labels from the ZipFile source to the ZipFile
    out; characters: alphabet -> character -> its drawings' entries. Returns build_runs's list."""
    runs = []
    for r in range(1, num_runs + 1):
        alphabet = rng.choice(candidates)
        chosen = rng.sample(sorted(characters[alphabet]), NUM_WAY)
        first, second = rng.sample(range(20), 2)
        classes, order = [], rng.sample(range(NUM_WAY), NUM_WAY)
        lines = []
        for k, character in enumerate(chosen):
            drawings = sorted(characters[alphabet][character])
            out.writestr(f'run{r:02d}/training/class{k + 1:02d}.png', source.read(drawings[first]))
            classes.append((f'{alphabet}/{character}', first, second))
        for m, k in enumerate(order):
            drawings = sorted(characters[alphabet][chosen[k]])
            out.writestr(f'run{r:02d}/test/item{m + 1:02d}.png', source.read(drawings[second]))
            lines.append(f'run{r:02d}/test/item{m + 1:02d}.png run{r:02d}/training/class{k + 1:02d}.png')
        out.writestr(f'run{r:02d}/{LABELS_FILE}', '\n'.join(lines) + '\n')
        runs.append((classes, order))
    return runs


def _files(path):
    """name -> a function returning its bytes, for every file of a zip or folder ('/'-separated names)."""
    if os.path.isdir(path):
        found = {}
        for root, _, names in os.walk(path):
            for name in names:
                full = os.path.join(root, name)
                found[os.path.relpath(full, path).replace(os.sep, '/')] = lambda full=full: open(full, 'rb').read()
        return found
    archive = zipfile.ZipFile(path)
    return {name: lambda name=name: archive.read(name) for name in archive.namelist() if not name.endswith('/')}


def _read_run(entries, labels_name, path, image_size):
    """One run -> (support (20, S, S), query (20, S, S), query labels (20,)), S = image_size.

    The names in class_labels.txt are relative to the folder that holds the run folder."""
    base = posixpath.dirname(posixpath.dirname(labels_name))
    pairs = [line.split() for line in entries[labels_name]().decode().splitlines() if line.strip()]
    training = sorted({pair[1] for pair in pairs if len(pair) == 2})
    if not pairs or any(len(pair) != 2 for pair in pairs) or len(training) != len(pairs):
        raise UserError(f'{path}: {labels_name} should list one "test image, training image" pair per line, '
                        'each training image once; replace the runs with a complete copy')

    def image(name):
        full = posixpath.join(base, name)
        if full not in entries:
            raise UserError(f'{path}: {full}, named in {labels_name}, is missing; replace the runs with a complete copy')
        return png_to_ink(entries[full](), image_size)
    support = np.stack([image(name) for name in training])
    query = np.stack([image(test) for test, _ in pairs])
    labels = np.array([training.index(train) for _, train in pairs])
    return support, query, labels


def read_runs(path, image_size=IMAGE_SIZE):
    """Every run under path (a zip or a folder), in name order, its images at image_size.

    Returns:
        names: the R run folder names.
        batch: a TaskBatch of R tasks: support (R, N, 1, S, S) labelled 0..N-1 by
            training file name, query (R, N, 1, S, S) with the labels of class_labels.txt.
    """
    try:
        entries = _files(path)
        labels_files = sorted(name for name in entries if posixpath.basename(name) == LABELS_FILE)
        if not labels_files:
            raise UserError(f'--lake_runs {path} holds no runNN/{LABELS_FILE}; give all_runs.zip or its folder')
        runs = [_read_run(entries, name, path, image_size) for name in labels_files]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise UserError(f'--lake_runs {path} is unreadable ({error}); give all_runs.zip or its folder') from None
    if len({run[0].shape for run in runs}) != 1:
        raise UserError(f'--lake_runs {path}: runs of different sizes; give all_runs.zip or its folder')
    support, query, labels = (torch.from_numpy(np.stack(parts)) for parts in zip(*runs))
    num_way = support.shape[1]
    names = [posixpath.basename(posixpath.dirname(name)) for name in labels_files]
    batch = tasks.TaskBatch(support.unsqueeze(2).float(), torch.arange(num_way).expand(len(runs), -1).contiguous(),
                            query.unsqueeze(2).float(), labels.long())
    return names, batch


def check_model(class_split, num_outputs, log_dir):
    """Refuse a model that saw characters of the runs, or whose head has too few classes."""
    if class_split != 'lake':
        raise UserError(f'the model in {log_dir} was trained on the {class_split} split, whose training classes '
                        'include characters of Lake\'s runs (images_evaluation); train with --split lake')
    if num_outputs is not None and num_outputs < 20:
        raise UserError(f'Lake\'s runs are 20-way and the model in {log_dir} has a {num_outputs}-way head; '
                        'train it with --num_way 20 --split lake')


def error_rates(learner, batch):
    """(R,) error rate of each run: the fraction of its test images classified wrong, and whether
    each test image was classified on its own (learner.queries_alone)."""
    with learner.queries_alone() as alone:
        accuracy = learner.evaluate(batch.to(learner.parameters()[0].device))[learner.key_metric]
    return 1 - accuracy.cpu().numpy().astype(np.float64), alone


def class_probabilities(learner, batch):
    """(R, N, N) probabilities of each run's test images (rows) over its training images' classes,
    each test image on its own where the learner can, as error_rates scores them (ProtoNet)."""
    with learner.queries_alone(), torch.no_grad():
        _, query_logits = learner.logits(batch.to(learner.parameters()[0].device), learner.inductive,
                                         learner.test_views)
    return query_logits.float().softmax(-1).cpu().numpy().astype(np.float64)


def lake_test(learner, args, log_dir, prints=True):
    """Print (if prints) each run's error rate and the mean over runs; returns the (R,) error rates.

    Each test image is classified on its own from its run's training images where the learner
    can (ProtoNet: batch norm with the training images' statistics); otherwise the line says
    that the run's test images shared batch statistics."""
    check_model(args.class_split, learner.num_outputs, log_dir)
    path = args.lake_runs or official_runs(args.data_dir)
    names, batch = read_runs(path, args.image_size)
    errors, alone = error_rates(learner, batch)
    if not prints:
        return errors
    num_items = batch.labels_query.shape[1]
    for name, error in zip(names, errors):
        print(f'{name}: error rate {100 * error:.1f}% ({round(error * num_items)} of {num_items} wrong)')
    print(summary_line(errors, alone))
    return errors


def summary_line(errors, alone=True):
    """The line that reports (R,) error rates (fractions) over Lake's runs; alone: whether each test
    image was classified on its own."""
    return (f'Lake one-shot runs: mean error rate {100 * errors.mean():.2f}% over {len(errors)} runs '
            f'(accuracy {100 * (1 - errors.mean()):.2f}%)' + ('' if alone else ', transductive: the test images '
                                                             'of a run shared batch-norm statistics'))
