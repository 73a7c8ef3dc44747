"""Stops the test PostgreSQL server once the pytest process that started it is gone.

Run as a script by ``tests.support.postgres`` with a pipe on stdin whose other end only that
pytest process holds: the read below returns when the pipe is closed, which the kernel does when
pytest exits in any way, SIGKILL included (atexit handlers, and so pgserver's own clean-up, do
not run then). If the server is still there, it gets PostgreSQL's fast shutdown (SIGINT) and its
folder is removed. After a normal end pytest has done both already, and this does nothing.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

STOP_WAIT_S = 30.0


def _postmaster(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now holds the number
        return False
    return True


def main(pgdata: Path) -> None:
    sys.stdin.buffer.read()  # until pytest closes the pipe or dies
    pid = _postmaster(pgdata)
    if pid is not None and _alive(pid):
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_WAIT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(pgdata, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
