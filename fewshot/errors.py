"""Errors a user can fix: printed as one line, without a traceback."""
import sys


class UserError(Exception):
    """A problem with the user's input (a flag, a file, the data): one line that names it and the fix."""


def run_cli(main):
    """Call `main()` and return what it returns; turn a UserError into `error: ...` on stderr and exit 2."""
    try:
        return main()
    except UserError as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(2)
