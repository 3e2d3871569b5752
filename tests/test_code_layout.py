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


def loaded_names(path):
    """The modules a file loads anywhere in it (functions included): imports ('from a import b'
    gives a and a.b), and importlib.import_module('x') or __import__('x') with a literal name
    (a load the import statements do not show)."""
    tree, found = ast.parse(open(path).read()), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f'{node.module}.{alias.name}' for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and \
                isinstance(node.args[0].value, str):
            function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, 'id', '')
            if function in ('import_module', '__import__'):
                found.add(node.args[0].value.split(':')[0])
    return found


def imports_of(path, modules):
    """The library modules a file imports anywhere in it (functions included)."""
    return loaded_names(path) & set(modules)


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
               if not name.startswith(('fewshot.algorithms', 'fewshot.datasets'))
               and name not in ('fewshot.registry', 'fewshot.__main__')}  # the tables, and the launcher
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


COURSE_FILES = {name[:-3] for name in PROGRAMS + COURSE_API}


def test_the_library_never_loads_the_course_files():
    """The course's programs hand their classes to the library; nothing under fewshot/ loads them
    (but the launcher at its top, python -m fewshot, which runs them as a program does)."""
    loads = {name: sorted(loaded_names(path) & COURSE_FILES) for name, path in library_modules().items()
             if name != 'fewshot.__main__'}
    assert {name: found for name, found in loads.items() if found} == {}
    assert loaded_names(library_modules()['fewshot.__main__']) >= {'maml', 'protonet'}


def test_a_load_through_importlib_is_seen(tmp_path):
    path = tmp_path / 'sneaky.py'
    path.write_text("import importlib\nlearner = importlib.import_module('maml').MAML\nother = __import__('protonet')\n")
    assert loaded_names(path) >= {'maml', 'protonet', 'importlib'}
