"""What a long run meets besides its own steps: a signal to stop (Ctrl-C, a scheduler's
SIGTERM) and a second writer on its log dir.

Interruption turns SIGINT and SIGTERM into a request the loop reads after each step:
it finishes the step, saves it and exits with the signal's status (130, 143); a validation
in progress (one process) is cut short, and the step saved unscored. So the wait is at most
one training step and one save. A second signal stops at once. LogDirLock holds an OS lock on the log dir while a run trains in
it; the kernel releases it if the process dies, so no stale lock survives a crash.
"""
import contextlib
import fcntl
import os
import signal
import sys
import threading

from fewshot.errors import UserError

SIGNALS = (signal.SIGINT, signal.SIGTERM)
LOCK_NAME = '.lock'


class Interruption:
    """The first SIGINT or SIGTERM received while installed (its number in `signal`, else 0)."""

    def __init__(self):
        self.signal = 0

    def _handle(self, number, frame):
        if self.signal:  # the second: at once
            print(f'\nstopped at once by a second {signal.Signals(number).name}; the checkpoints on disk are kept',
                  file=sys.stderr, flush=True)
            os._exit(128 + number)
        self.signal = number
        print(f'\n{signal.Signals(number).name}: finishing this step, then saving it (a validation is cut short; '
              'again to stop at once)',
              file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def installed(self):
        """Handle the signals inside (the main thread only: elsewhere Python delivers none)."""
        if not _main_thread():
            yield self
            return
        before = {number: signal.signal(number, self._handle) for number in SIGNALS}
        try:
            yield self
        finally:
            for number, handler in before.items():
                signal.signal(number, handler)

    @property
    def exit_status(self):
        return 128 + self.signal


def _main_thread():
    return threading.current_thread() is threading.main_thread()


class LogDirLock:
    """An exclusive lock on LOG_DIR/.lock (fcntl.flock, released by the kernel when the process
    ends); the file holds the holder's process id. A second holder is refused in one line."""

    def __init__(self, log_dir):
        self.path = os.path.join(log_dir, LOCK_NAME)
        self.file = None

    def __enter__(self):
        while True:
            handle = open(self.path, 'a+')
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip() or 'another process'
                handle.close()
                raise UserError(f'--log_dir {os.path.dirname(self.path)} is in use by process {holder}, which is '
                                'training in it; wait for it to end, or choose another --log_dir') from None
            if _same_file(handle, self.path):  # not a file a releasing holder has just removed
                break
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.file = handle
        return self

    def __exit__(self, *exception):
        os.remove(self.path)
        self.file.close()  # closing releases the lock


def _same_file(handle, path):
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False
