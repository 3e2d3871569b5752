"""The layout's promises, checked on the code: no import cycles (imports inside functions
included), no generic module that names a dataset or an algorithm, every top-level file
a program whose --help works or the course's API that says it is none, small modules."""
import ast
import os
import subprocess
import sys

import pytest

from fewshot import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, 'fewshot')


def library_modules():
    """{'fewshot.engine.loop': path, ...}"""
    found = {}
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith('.py'):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
                found[module[:-len('.__init__')] if module.endswith('.__init__') else module] = path
    return found


def imports_of(path, modules):
    """The library modules a file imports anywhere in it (functions included)."""
    tree, found = ast.parse(open(path).read()), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f'{node.module}.{alias.name}' for alias in node.names)
    return {name for name in found if name in modules}


def test_the_library_has_no_import_cycles():
    modules = library_modules()
    graph = {name: imports_of(path, modules) - {name} for name, path in modules.items()}
    state = {}

    def visit(name, trail):
        if state.get(name) == 'done':
            return
        assert state.get(name) != 'open', f'import cycle: {" -> ".join(trail + [name])}'
        state[name] = 'open'
        for other in sorted(graph[name]):
            if not other.startswith(name + '.'):  # a package's modules may be imported through it
                visit(other, trail + [name])
        state[name] = 'done'
    for name in sorted(graph):
        visit(name, [])


NAMES = set(registry.DATASETS) | set(registry.ALGORITHMS)


def code_words(path):
    """Identifiers and string constants of a file's code, docstrings and help texts left out."""
    tree = ast.parse(open(path).read())
    skipped = set()
    for node in ast.walk(tree):
        body = getattr(node, 'body', None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            skipped.add(id(body[0].value))
        if isinstance(node, ast.keyword) and node.arg == 'help':
            skipped.update(id(n) for n in ast.walk(node.value))
    words = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped:
            words.update(node.value.replace('.', ' ').replace('/', ' ').replace(':', ' ').split())
    return words


def test_generic_modules_name_no_dataset_or_algorithm():
    generic = {name: path for name, path in library_modules().items()
               if not name.startswith(('fewshot.algorithms', 'fewshot.datasets')) and name != 'fewshot.registry'}
    assert 'fewshot.engine.runner' in generic and 'fewshot.cli' in generic
    named = {name: sorted(code_words(path) & NAMES) for name, path in generic.items()}
    assert {name: found for name, found in named.items() if found} == {}


def top_level_files():
    return sorted(name for name in os.listdir(ROOT) if name.endswith('.py'))


PROGRAMS = ['bench.py', 'grader.py', 'maml.py', 'protonet.py', 'report.py', 'run_metabolism.py']
COURSE_API = ['omniglot.py', 'util.py']


def test_every_top_level_file_is_a_program_or_the_courses_api():
    assert top_level_files() == sorted(PROGRAMS + COURSE_API)


@pytest.mark.parametrize('name', PROGRAMS)
def test_a_programs_help_works(name):
    result = subprocess.run([sys.executable, name, '--help'], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith('usage:'), result.stderr


@pytest.mark.parametrize('name', COURSE_API)
def test_the_courses_api_run_as_a_program_says_it_is_none(name):
    result = subprocess.run([sys.executable, name], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and 'not a program' in result.stderr and len(result.stderr.splitlines()) == 1


def test_no_module_is_over_400_lines():
    paths = list(library_modules().values()) + [os.path.join(folder, name) for folder, _, names in
                                                os.walk(os.path.join(ROOT, 'tools')) for name in names
                                                if name.endswith('.py')]
    long = {os.path.relpath(p, ROOT): n for p in paths if (n := len(open(p).read().splitlines())) > 400}
    assert long == {}


def test_the_lake_tools_import_the_library_not_the_course_files():
    course = {name[:-3] for name in PROGRAMS + COURSE_API}
    folder = os.path.join(ROOT, 'tools', 'lake')
    imported = {name: imports_of(os.path.join(folder, name), course) for name in os.listdir(folder) if name.endswith('.py')}
    assert len(imported) >= 4 and {name: found for name, found in imported.items() if found} == {}
