"""Bad input gets one line, `error: ...`, naming the flag or file, and a non-zero
exit: one case per class of failure and per script, each run as a user would
(a subprocess), none training before it fails. Also: temporary checkpoint
files left by a killed save are cleaned, and checkpoints honour the umask."""
import os
import subprocess
import sys
import zipfile

import pytest

import conftest
import torch

from test_metabolism import write_tables
from fewshot.engine import checkpoints
from fewshot import files
from fewshot.errors import UserError
from helpers import run_with

ROOT = conftest.ROOT


def corrupt_zip(folder):
    """omniglot_resized.zip whose one member's compressed bytes are damaged."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, 'omniglot_resized.zip')
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as archive:
        archive.writestr('omniglot_resized/Alphabet/character01/0001_01.png', os.urandom(2000) * 4)
    data = bytearray(open(path, 'rb').read())
    for i in range(100, 140):
        data[i] ^= 0xFF
    open(path, 'wb').write(bytes(data))
    return folder


def checkpoint_of(folder, algorithm, dataset='omniglot', older_layout=False):
    """A log dir holding state0.pt written by an algorithm (in the older layout: no algorithm recorded)."""
    os.makedirs(folder, exist_ok=True)
    args = {} if older_layout else {'algorithm': algorithm, 'dataset': dataset}
    learner = {'network': {}} if algorithm == 'protonet' else {'meta_parameters': {}, 'inner_lrs': {}}
    torch.save({'step': 0, 'learner': learner, 'args': args, 'val_score': 0.5, 'metric_kind': 'accuracy'},
               os.path.join(folder, 'state0.pt'))
    return folder


def non_utf8_tables(folder):
    folder = write_tables(folder)
    path = os.path.join(folder, 'cyp2c9_veith.tab')
    lines = open(path, 'rb').read().split(b'\n')
    lines[4] = lines[4].replace(b'C', b'\xff', 1)
    open(path, 'wb').write(b'\n'.join(lines))
    return folder


# (script, flags, fragments the one line names); T is the test's tmp_path
CASES = {
    'non-finite learning rate, protonet': ('protonet.py', ['--learning_rate', 'nan'], ['--learning_rate', 'nan']),
    'infinite learning rate, protonet': ('protonet.py', ['--learning_rate', 'inf'], ['--learning_rate', 'inf']),
    'non-finite outer learning rate, maml': ('maml.py', ['--outer_lr', 'nan'], ['--outer_lr', 'nan']),
    'non-finite inner learning rate, maml': ('maml.py', ['--inner_lr', 'nan'], ['--inner_lr']),
    'non-finite learning rate, run_metabolism': ('run_metabolism.py', ['--learning_rate', 'nan'], ['--learning_rate']),
    'negative seed, protonet': ('protonet.py', ['--seed', '-1'], ['--seed', '-1']),
    'no hidden channels, maml': ('maml.py', ['--num_hidden_channels', '0'], ['--num_hidden_channels']),
    'negative annealing, maml': ('maml.py', ['--anneal_derivative_order', '-1'], ['--anneal_derivative_order']),
    'no queries, run_metabolism': ('run_metabolism.py', ['--num_query', '0'], ['--num_query']),
    'corrupt zip member, protonet': ('protonet.py', ['--data_dir', 'Z', '--log_dir', 'T/log'], ['omniglot_resized.zip']),
    'corrupt zip member, maml': ('maml.py', ['--data_dir', 'Z', '--log_dir', 'T/log'], ['omniglot_resized.zip']),
    'log dir is a file, protonet': ('protonet.py', ['--log_dir', 'F', '--data_dir', 'T/none'], ['--log_dir', 'a file']),
    'log dir cannot be made, maml': ('maml.py', ['--log_dir', '/proc/no/such', '--data_dir', 'T/none'], ['--log_dir']),
    'log dir is a file, run_metabolism': ('run_metabolism.py', ['--log_dir', 'F', '--data_dir', 'T/none'],
                                          ['--log_dir']),
    'data dir is a file, protonet': ('protonet.py', ['--data_dir', 'F', '--log_dir', 'T/log'], ['--data_dir', 'a file']),
    'data dir is a file, run_metabolism': ('run_metabolism.py', ['--data_dir', 'F', '--log_dir', 'T/log'],
                                           ['--data_dir']),
    'resuming a missing checkpoint, maml': ('maml.py', ['--checkpoint_step', '5', '--log_dir', 'T/log',
                                                        '--data_dir', 'T/none'], ['state5.pt']),
    'maml checkpoint tested by protonet': ('protonet.py', ['--test', '--log_dir', 'M'],
                                           ['written by maml', 'test it with maml.py']),
    'maml checkpoint resumed by protonet': ('protonet.py', ['--checkpoint_step', '0', '--log_dir', 'M'],
                                            ['written by maml', 'resume it with maml.py']),
    'older protonet checkpoint tested by maml': ('maml.py', ['--test', '--log_dir', 'P'],
                                                 ['written by protonet', 'test it with protonet.py']),
    'protonet checkpoint tested by run_metabolism': ('run_metabolism.py', ['--test', '--log_dir', 'P'],
                                                     ['written by protonet on omniglot']),
    'csv is a folder, protonet': ('protonet.py', ['--test', '--log_dir', 'P', '--csv', 'T'], ['--csv', 'a folder']),
    'csv is a folder, maml': ('maml.py', ['--test', '--log_dir', 'M', '--csv', 'T'], ['--csv']),
    'table not UTF-8, run_metabolism': ('run_metabolism.py', ['--data_dir', 'U', '--log_dir', 'T/log'],
                                        ['cyp2c9_veith.tab, line 5', 'UTF-8']),
    'table not UTF-8, protonet': ('protonet.py', ['--dataset', 'metabolism', '--data_dir', 'U', '--log_dir', 'T/log'],
                                  ['cyp2c9_veith.tab']),
}


@pytest.mark.parametrize('case', list(CASES))
@pytest.mark.slow
def test_bad_input_is_one_line_naming_the_flag_or_file(tmp_path, case):
    script, flags, fragments = CASES[case]
    folders = {'T': str(tmp_path)}
    needed = {'Z': lambda: corrupt_zip(str(tmp_path / 'zip')),
              'F': lambda: (tmp_path / 'file').write_text('x') and str(tmp_path / 'file'),
              'M': lambda: checkpoint_of(str(tmp_path / 'maml'), 'maml'),
              'P': lambda: checkpoint_of(str(tmp_path / 'protonet'), 'protonet', older_layout=True),
              'U': lambda: non_utf8_tables(tmp_path / 'tables')}
    for key, make in needed.items():
        if key in flags:
            folders[key] = make()
    flags = [folders.get(f, f.replace('T/', str(tmp_path) + '/')) for f in flags]
    result = subprocess.run([sys.executable, os.path.join(ROOT, script), *flags], capture_output=True, text=True,
                            timeout=120, cwd=str(tmp_path))
    assert result.returncode != 0, result.stdout
    assert 'Traceback' not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not os.path.exists(tmp_path / 'log' / 'state0.pt')  # nothing was trained


def test_stray_temporaries_of_a_killed_save_are_removed_and_the_checkpoint_loads(tmp_path, capsys):
    """A save killed before its rename leaves .state0.pt.PID.tmp (and older versions .tmp-*.pt);
    the next run in that log dir removes them, and the checkpoint itself is intact."""
    path = str(tmp_path / 'state0.pt')
    checkpoints.write({'version': 1}, path)
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    stray = tmp_path / f'.state0.pt.{dead.pid}.tmp'
    stray.write_bytes(b'x' * 3000)
    (tmp_path / '.tmp-abc123.pt').write_bytes(b'y' * 1000)
    mine = tmp_path / f'.state5.pt.{os.getpid()}.tmp'  # this process's own save in progress is kept
    mine.write_bytes(b'z')
    assert files.remove_stale_temporaries(str(tmp_path)) == (2, 4000)
    assert sorted(os.listdir(tmp_path)) == sorted(['state0.pt', mine.name])
    assert checkpoints.read(path) == {'version': 1}


def test_a_run_reports_the_temporaries_it_removes(tmp_path, capsys):
    from test_protonet import small_learner, synthetic_args, synthetic_sampler
    (tmp_path / '.state100.pt.999999999.tmp').write_bytes(b'x' * 2 ** 20)
    run_with(synthetic_args(num_train_iterations=1), str(tmp_path), small_learner, synthetic_sampler)
    assert 'removed 1 temporary checkpoint file(s) (1.0 MiB)' in capsys.readouterr().out
    assert not [n for n in os.listdir(tmp_path) if n.endswith('.tmp')]


def test_checkpoints_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        checkpoints.write({'a': 1}, str(tmp_path / 'state0.pt'))
        os.umask(0o077)
        checkpoints.write({'a': 1}, str(tmp_path / 'state1.pt'))
    finally:
        os.umask(old)
    assert os.stat(tmp_path / 'state0.pt').st_mode & 0o777 == 0o644
    assert os.stat(tmp_path / 'state1.pt').st_mode & 0o777 == 0o600


def test_a_failed_download_leaves_no_empty_folders(tmp_path, monkeypatch):
    import urllib.request
    import protonet

    def offline(*args, **kwargs):
        raise OSError('no network')
    monkeypatch.setattr(urllib.request, 'urlopen', offline)
    data, log_dir = tmp_path / 'data' / 'omniglot', tmp_path / 'logs' / 'run'
    with pytest.raises(UserError, match='could not download Omniglot \\(no network\\)'):
        protonet.main(['--data_dir', str(data), '--log_dir', str(log_dir)])
    assert os.listdir(tmp_path) == []  # neither the data folder nor the log dir is left behind
