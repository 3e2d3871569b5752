"""The course's graded methods, which are the code that trains: protonet.py's ProtoNet._step,
maml.py's MAML._inner_loop and MAML._outer_step. The programs train, validate and test through
them; the faster ways to compute the same numbers (a meta-batch's tasks at once by vmap or as
grouped convolutions, batched evaluation) are tested equal to the methods as shipped, so they
are used only while a learner's methods are those: an edited or overridden method is run task
by task, and the program says so when it starts.

A method is known by the SHA-256 of its code (its source without docstring, comments and
layout). TESTED holds the shipped methods' fingerprints; tests/algorithms/test_graded.py fails,
printing the new one, when a shipped method changes: run the equality tests, then record it.
"""
import ast
import hashlib
import inspect
import textwrap

TESTED = {  # 'Class._method': the fingerprint of the shipped method, which the faster ways are tested equal to
    'ProtoNet._step': '6e807d79e6dee3efb8222765bbc9ce5c026ee3e9b3ba1403cba0060d079c5031',
    'MAML._inner_loop': '785b12616fe15788066478b63192d3ec73fe8167a99fd242b76f465a580cd656',
    'MAML._outer_step': 'de0d7a02f9264414ec9edadae18730f571afa099199b9667d11b5abd58726138',
}


def fingerprint(function):
    """The SHA-256 of a function's code: its source parsed, its name, decorators and docstring
    dropped, written out again (None when its source cannot be read)."""
    try:
        source = textwrap.dedent(inspect.getsource(function))
        definition = ast.parse(source).body[0]
    except (OSError, TypeError, SyntaxError):
        return None
    if not isinstance(definition, ast.FunctionDef):  # a lambda: its line
        return hashlib.sha256(source.encode()).hexdigest()
    definition.name, definition.decorator_list = 'method', []
    body = definition.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and \
            isinstance(body[0].value.value, str):
        definition.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.unparse(definition).encode()).hexdigest()


def edited(cls, names):
    """The names ('MAML._inner_loop', ...) whose method on cls is not the shipped one."""
    return [name for name in names if fingerprint(getattr(cls, name.split('.')[1], None)) != TESTED[name]]


def notice(cls, names):
    """The start-up line of a learner whose graded methods were edited, or None."""
    changed = edited(cls, names)
    if not changed:
        return None
    return (f'{", ".join(changed)} {"is" if len(changed) == 1 else "are"} not the shipped code the faster ways were '
            f'tested equal to: training, validating and testing task by task through {cls.__module__}.{cls.__name__}')
