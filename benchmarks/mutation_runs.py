"""Runs pytest on mutated copies of the tree, each run a fork of one warm process.

Starting pytest here costs 10-20 s, nearly all of it importing torch, transformers, FAISS,
hypothesis and the rest; a module's own tests then take a few seconds. So the parent imports
every third-party module those tests load (learnt from an unmutated baseline run) and forks a
child per mutant, which imports only vizdex and the tests, both from its slot. A slot is a
private copy of the tree (one per parallel job) with one file mutated while its child runs.

Bytecode is never written for a slot: a mutant the same size as the original, written within the
same second, would otherwise pass the ``.pyc`` freshness check and run stale code.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
from cosmic_ray.exceptions import CosmicRayTestingException

from tests.support.source_tree import copy_source

_SLOT_PACKAGES = ("vizdex", "tests", "encoders", "search", "indexer", "web", "migrations")
_OWN_PACKAGES = (*_SLOT_PACKAGES, "benchmarks")


@dataclass(frozen=True)
class Run:
    """One pytest run in a slot: the files to swap in first, the test files, a time limit."""

    key: str
    files: dict[str, str]  # module path → source to write before the run
    tests: tuple[str, ...]
    timeout: float


@dataclass(frozen=True)
class Outcome:
    key: str
    exit_code: int | None  # pytest's; None when killed for time or by a signal
    timed_out: bool
    seconds: float
    log: Path

    @property
    def passed(self) -> bool:
        return self.exit_code == 0


def make_slots(root: Path, folder: Path, count: int) -> list[Path]:
    """``count`` copies of the tree, uncommitted files included."""
    slots = []
    for index in range(count):
        slot = folder / f"slot-{index}"
        if slot.exists():
            shutil.rmtree(slot)
        slots.append(copy_source(root, slot, untracked=True))
    return slots


def _child(slot: Path, tests: Sequence[str], log: Path, modules_out: Path | None) -> NoReturn:
    """The forked side: run pytest in ``slot``, exit with its code, never return."""
    code = 3
    try:
        os.setpgid(0, 0)  # one group, so a timeout also ends processes the tests started
        handle = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(handle, 1)
        os.dup2(handle, 2)
        os.chdir(slot)
        for name in [name for name in sys.modules if name.split(".")[0] in _SLOT_PACKAGES]:
            del sys.modules[name]  # the parent's copies: the child must import the slot's
        sys.path.insert(0, str(slot))
        sys.dont_write_bytecode = True
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(slot), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        # cosmic-ray's ExceptionReplacer writes ``except CosmicRayTestingException``: a handler
        # that never matches. Defined here, that stays its only effect.
        builtins.CosmicRayTestingException = CosmicRayTestingException  # type: ignore[attr-defined]
        arguments = ["-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-x", "--rootdir"]
        code = int(pytest.main([*arguments, str(slot), *tests]))
        if modules_out is not None:
            modules_out.write_text(json.dumps(sorted(_third_party(slot))))
    except BaseException:  # a child must never return into the parent's loop
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _third_party(slot: Path) -> set[str]:
    """Modules loaded so far that the parent may import once for every child."""
    names = set()
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name.split(".")[0] in _OWN_PACKAGES or name.startswith(("conftest", "__main__")):
            continue
        if path is None or str(slot) in str(path):
            continue
        names.add(name)
    return names


def preload(module_lists: Sequence[Path]) -> int:
    """Import what the baseline children loaded; returns how many modules are now loaded."""
    wanted: set[str] = set()
    for listed in module_lists:
        if listed.exists():
            wanted.update(json.loads(listed.read_text()))
    for name in sorted(wanted, key=lambda name: (name.count("."), name)):
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception:  # some only import as part of their parent's import: skip those
            continue
    if threading.active_count() > 1:
        # A fork copies only the forking thread: a lock held by another one stays held forever.
        print(f"warning: {threading.active_count()} threads alive before forking", flush=True)
    return len(sys.modules)


def run_all(
    runs: Sequence[Run],
    slots: Sequence[Path],
    logs: Path,
    on_outcome: Callable[[Run, Outcome], None],
    collect_modules: bool = False,
) -> None:
    """Run each ``Run`` in a free slot, as many at once as there are slots.

    After each run its files are put back as they were (the tree may change meanwhile).
    """
    pending = deque(runs)
    free = list(slots)
    running: dict[int, tuple[Run, Path, float]] = {}
    originals: dict[tuple[Path, str], bytes] = {}  # what each swapped file held before
    logs.mkdir(parents=True, exist_ok=True)
    try:
        while pending or running:
            while pending and free:
                run, slot = pending.popleft(), free.pop()
                for module, source in run.files.items():
                    originals[slot, module] = (slot / module).read_bytes()
                    (slot / module).write_text(source, encoding="utf-8")
                listed = logs / f"{run.key}.modules.json" if collect_modules else None
                pid = os.fork()
                if pid == 0:
                    _child(slot, run.tests, logs / f"{run.key}.log", listed)
                running[pid] = (run, slot, time.monotonic())
            finished = _finished(running)
            for done, code, timed_out in finished:
                run, slot, started = running.pop(done)
                for module in run.files:
                    (slot / module).write_bytes(originals.pop((slot, module)))
                free.append(slot)
                seconds = time.monotonic() - started
                log = logs / f"{run.key}.log"
                on_outcome(run, Outcome(run.key, code, timed_out, seconds, log))
            if not finished:
                time.sleep(0.05)
    finally:  # stopped early (Ctrl-C, SIGTERM): end the children's groups too
        for pid in running:
            _kill_group(pid)
            os.waitpid(pid, 0)


def _finished(running: dict[int, tuple[Run, Path, float]]) -> list[tuple[int, int | None, bool]]:
    """(pid, pytest's exit code or None, timed out) of each child that ended or ran too long."""
    finished: list[tuple[int, int | None, bool]] = []
    # Peek first (WNOWAIT): the group is ended while its leader's id is still ours.
    peeked = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if peeked is not None and peeked.si_pid in running:
        _kill_group(peeked.si_pid)  # processes the tests left behind
        status = os.waitstatus_to_exitcode(os.waitpid(peeked.si_pid, 0)[1])
        finished.append((peeked.si_pid, status if status >= 0 else None, False))
    now = time.monotonic()
    for pid, (run, _slot, started) in running.items():
        if now - started > run.timeout and all(pid != done for done, _, _ in finished):
            _kill_group(pid)
            os.waitpid(pid, 0)
            finished.append((pid, None, True))
    return finished


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
