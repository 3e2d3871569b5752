"""The course's graded methods, which are the code that trains: protonet.py's ProtoNet._step,
maml.py's MAML._inner_loop and MAML._outer_step. The programs train, validate and test through
them; the faster ways to compute the same numbers (a meta-batch's tasks at once by vmap or as
grouped convolutions, batched evaluation) are tested equal to the methods as shipped, so they
are used only while a learner's methods are those: an edited or overridden method is run task
by task, and the program says so when it starts.

A method is known by the SHA-256 of its code (its tokens, without docstring, comments and
layout). TESTED holds the shipped methods' fingerprints; tests/algorithms/test_graded.py fails,
printing the new one, when a shipped method changes: run the equality tests, then record it.
"""
import ast
import hashlib
import inspect
import io
import textwrap
import tokenize

TESTED = {  # 'Class._method': the fingerprint of the shipped method, which the faster ways are tested equal to
    'ProtoNet._step': '857c300f80ffa4505fd0ba4c4657ebc0f65d06c660272c50edfda2ecae06b880',
    'MAML._inner_loop': '8f359b7c517481260602106fc90bfdf912995f7e31a10babadde3b4563dcb483',
    'MAML._outer_step': 'bf8e10004c6c759fe7dcbcaaeabfb8dd45b81c8fa930d015ff301fb06650bdc6',
}


def fingerprint(function):
    """The SHA-256 of a function's code: its tokens line by line (each logical line's indentation
    and its tokens), without its name, decorators, docstring and comments, so that layout and
    prose do not count and the tokens, unlike a syntax tree's text, are the same in every Python
    version (None when its source cannot be read)."""
    try:
        source = textwrap.dedent(inspect.getsource(function))
        definition = ast.parse(source).body[0]
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (OSError, TypeError, SyntaxError, tokenize.TokenError):
        return None
    if not isinstance(definition, ast.FunctionDef):  # a lambda: its line
        return hashlib.sha256(source.encode()).hexdigest()
    first = definition.body[0]
    docstring = range(first.lineno, first.end_lineno + 1) if isinstance(first, ast.Expr) and isinstance(
        first.value, ast.Constant) and isinstance(first.value.value, str) else range(0)
    lines, words = [], []
    for token in tokens:
        if token.start[0] < definition.lineno or token.start[0] in docstring or token.type in SKIPPED:
            continue
        if token.type == tokenize.NEWLINE:
            lines.append(' '.join(words))
            words = []
            continue
        words.append(f'{token.start[1]}:{token.string}' if not words else token.string)
    lines[0] = lines[0].replace(f' {definition.name} ', ' method ', 1)
    return hashlib.sha256('\n'.join(lines).encode()).hexdigest()


SKIPPED = (tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)


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
