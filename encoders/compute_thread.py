"""One long-lived thread per process loads and runs every model on the CPU.

PyTorch's CPU kernels run on OpenMP, and libgomp gives each thread that enters a parallel
region a team of helper threads of its own, kept for the thread's life. Once a process holds
more OpenMP threads than cores, libgomp stops spinning between regions, and each of the hundreds
of regions in a forward pays a sleep and a wake-up. On the 2-core development VM a bfloat16 CLIP
text query took 34–39 ms when the weights were loaded in one thread and run in another (a
server loads in a start-up thread, then runs in its batching threads) and 20–22 ms when one
thread did both. Sending all of a process's CPU model work to one thread keeps one team.

CUDA models do not go through it: their CPU side is a few small launches per forward.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

import torch

P = ParamSpec("P")
R = TypeVar("R")

THREAD_NAME = "vizdex-compute"

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(1, thread_name_prefix=THREAD_NAME)
        return _executor


def on_compute_thread() -> bool:
    return threading.current_thread().name.startswith(THREAD_NAME)


def run_on_cpu_thread(call: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """``call(*args, **kwargs)`` on the process's compute thread; its result or its exception.

    From the compute thread itself it runs in place (a model loaded there may call back in).
    """
    if on_compute_thread():
        return call(*args, **kwargs)
    return _pool().submit(call, *args, **kwargs).result()


def run_for_device(
    where: torch.device, call: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
) -> R:
    """On the compute thread for a CPU model, in the caller's thread for any other device."""
    if where.type == "cpu":
        return run_on_cpu_thread(call, *args, **kwargs)
    return call(*args, **kwargs)
