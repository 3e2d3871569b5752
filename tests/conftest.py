"""Shared fixtures. Integration tests read the real data under $FEWSHOT_DATA
(default: ../shared/data beside the checkout). Outside CI they skip, saying so,
when it is missing; under CI (CI=true) a missing data folder is a failure."""
import os
import shutil
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# one thread count for every run, whatever else the machine is doing (--threads auto would measure
# the load): runs compared bit for bit, and the recorded reference weights, need the same count
os.environ.setdefault('OMP_NUM_THREADS', str(os.cpu_count()))
# one user cache for the whole session (the tuning cache: runs with the same settings
# share one), away from the user's own; subprocesses inherit it; removed at the end
CACHE = tempfile.mkdtemp(prefix='fewshot-test-cache-')
os.environ['XDG_CACHE_HOME'] = CACHE
TESTS = os.path.dirname(os.path.abspath(__file__))
# tests/ mirrors the package (algorithms/, datasets/, engine/) and the programs (programs/, tools/); their
# modules import each other's helpers by name
sys.path[:0] = [TESTS] + [os.path.join(TESTS, name) for name in sorted(os.listdir(TESTS))
                          if os.path.isdir(os.path.join(TESTS, name)) and not name.startswith(('_', '.'))]
DATA_ROOT = os.environ.get('FEWSHOT_DATA', os.path.join(ROOT, '..', 'shared', 'data'))


def real_data(name):
    path = os.path.join(DATA_ROOT, name)
    if not os.path.isdir(path):
        if os.environ.get('CI'):
            pytest.fail(f'real data missing at {path}: CI must run the integration tests')
        pytest.skip(f'real data missing at {path} (set FEWSHOT_DATA); integration test skipped outside CI')
    return path


@pytest.fixture
def omniglot_dir():
    return real_data('omniglot')


@pytest.fixture
def metabolism_dir():
    return real_data('metabolism')


def pytest_collection_modifyitems(items):
    """Integration tests (those that read the real data) are slow: the quick suite leaves them out."""
    for item in items:
        if {'omniglot_dir', 'metabolism_dir'} & set(getattr(item, 'fixturenames', ())):
            item.add_marker(pytest.mark.slow)


def pytest_unconfigure(config):
    shutil.rmtree(CACHE, ignore_errors=True)
