"""The README's set-up is true: a CPU torch first (a bare `pip install torch` takes the CUDA
build), every requirement named, and the quick and full suites' commands with their times."""
import os
import re

from conftest import ROOT


def read(name):
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def set_up_section():
    readme = read('README.md')
    return readme[readme.index('## Set up and test'):readme.index("## The course's commands")]


def requirement_names(lines):
    return [re.split(r'[<>=\[ ]', line.strip())[0] for line in lines if line.strip()]


def test_the_set_up_installs_a_cpu_torch_before_anything_asks_for_torch():
    setup = set_up_section()
    assert setup.index('download.pytorch.org/whl/cpu') < setup.index('pip install -r requirements.txt')


def test_the_set_up_names_every_requirement_and_the_package_asks_for_no_other():
    setup = set_up_section()
    required = requirement_names(read('requirements.txt').splitlines())
    assert [name for name in required if name not in setup] == []
    packaged = set(re.findall(r'"([A-Za-z0-9_.-]+)[<>=]', read('pyproject.toml')))  # dependencies and extras
    assert packaged - {'setuptools', 'higher'} <= set(required)  # the build's, and the benchmark's own


def test_the_set_up_gives_the_quick_and_the_full_suite_with_their_times():
    setup = set_up_section()
    assert re.search(r'python -m pytest -q -m "not slow" tests .*about \d+ min', setup)
    assert re.search(r'python -m pytest -q tests .*about \d+ min', setup)
    assert 'slow: ' in read('pyproject.toml')  # the marker the quick suite leaves out is declared
