"""A CPU model loads and runs on one long-lived thread of its own.

PyTorch's CPU kernels run on OpenMP, and libgomp gives each thread that enters a parallel
region a team of helper threads of its own, kept for the thread's life. Once a process holds
more OpenMP threads than cores, libgomp stops spinning between regions, and each of the hundreds
of regions in a forward pays a sleep and a wake-up. On the 2-core development VM a bfloat16 CLIP
text query took 34–39 ms when the weights were loaded in one thread and run in another (a
server loaded in a start-up thread, then ran in its image and text batching threads) and
20–22 ms when one thread did both. So each model keeps to one thread: one team per model.

One thread per model, not per process: a query for one model must not wait behind another
model's ingest batch (forwards of one model already took turns). A thread idle for
``IDLE_EXIT_S`` ends, and its OpenMP team with it (a removed model leaves nothing running); the
next call starts a new one. The threads are daemons, so Ctrl-C is not held up by a forward, and
a forked child starts with none. CUDA models do not use them: their CPU side is a few launches.

A thread's OpenMP thread count is its own once it has run a parallel region:
``torch.set_num_threads`` in the caller does not reach a model's thread that already ran.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, ParamSpec, TypeVar

import torch

P = ParamSpec("P")
R = TypeVar("R")

THREAD_NAME = "vizdex-compute"
IDLE_EXIT_S = 300.0

_Call = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class _ModelThread:
    def __init__(self, key: str) -> None:
        self.key = key
        self.calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name=f"{THREAD_NAME} {key}", daemon=True)

    def _loop(self) -> None:
        _current.key = self.key
        while True:
            try:
                future, call, args, kwargs = self.calls.get(timeout=IDLE_EXIT_S)
            except queue.Empty:
                with _lock:  # callers queue under the same lock: nothing can slip in unseen
                    if self.calls.empty():
                        if _threads.get(self.key) is self:
                            del _threads[self.key]
                        return
                continue
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call(*args, **kwargs)
            except BaseException as error:  # the caller hears about whatever it was
                future.set_exception(error)
            else:
                future.set_result(result)


_lock = threading.Lock()
_threads: dict[str, _ModelThread] = {}
_current = threading.local()  # .key: the model whose thread this is


def _forget_threads_in_child() -> None:
    # A forked child has none of the parent's threads; it starts its own when asked.
    global _lock
    _lock = threading.Lock()
    _threads.clear()


os.register_at_fork(after_in_child=_forget_threads_in_child)


def run_on_model_thread(key: str, call: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """``call(*args, **kwargs)`` on model ``key``'s thread; its result or its exception.

    From that thread itself it runs in place (a model loading there may call back in).
    """
    if getattr(_current, "key", None) == key:
        return call(*args, **kwargs)
    future: Future[R] = Future()
    with _lock:
        worker = _threads.get(key)
        if worker is None:
            worker = _threads[key] = _ModelThread(key)
            worker.thread.start()
        worker.calls.put((future, call, args, kwargs))
    return future.result()


def run_for_device(
    where: torch.device, key: str, call: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
) -> R:
    """On model ``key``'s thread for a CPU model, in the caller's thread for any other device."""
    if where.type == "cpu":
        return run_on_model_thread(key, call, *args, **kwargs)
    return call(*args, **kwargs)
