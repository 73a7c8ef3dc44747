"""A CPU model's work keeps to one thread of its own (encoders/compute_thread.py says why)."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from vizdex.encoders import compute_thread, loading
from vizdex.encoders.base import Encoder
from vizdex.encoders.clip import ClipEncoder
from vizdex.encoders.compute_thread import THREAD_NAME, run_for_device, run_on_model_thread
from vizdex.encoders.settings import EncoderSettings


def thread_name() -> str:
    return threading.current_thread().name


def test_a_models_work_runs_on_one_named_thread_whoever_asks() -> None:
    with ThreadPoolExecutor(4) as pool:
        names = set(pool.map(lambda _: run_on_model_thread("m", thread_name), range(16)))
    assert names == {f"{THREAD_NAME} m"}
    assert run_on_model_thread("other", thread_name) == f"{THREAD_NAME} other"


def test_the_models_thread_calling_in_again_runs_in_place() -> None:
    # A nested submit from the one worker would wait on itself for ever.
    assert run_on_model_thread("m", run_on_model_thread, "m", thread_name) == f"{THREAD_NAME} m"


def test_an_error_reaches_the_caller_as_itself() -> None:
    def fail() -> None:
        raise ValueError("from the model's thread")

    with pytest.raises(ValueError, match="from the model's thread"):
        run_on_model_thread("m", fail)
    assert run_on_model_thread("m", thread_name) == f"{THREAD_NAME} m"  # still serving


def test_one_models_long_forward_does_not_hold_up_anothers() -> None:
    release = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(run_on_model_thread, "ingesting", release.wait, 30)
        try:
            assert run_on_model_thread("querying", lambda: "answered") == "answered"
            assert not busy.done()
        finally:
            release.set()
        assert busy.result(30) is True


def test_an_idle_thread_ends_and_the_next_call_starts_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(compute_thread, "IDLE_EXIT_S", 0.05)
    first = run_on_model_thread("brief", threading.current_thread)
    first.join(10)
    assert not first.is_alive()  # its OpenMP team goes with it
    second = run_on_model_thread("brief", threading.current_thread)
    assert second is not first and second.name == f"{THREAD_NAME} brief"


def test_the_threads_are_daemons_so_ctrl_c_can_end_the_process() -> None:
    assert run_on_model_thread("m", lambda: threading.current_thread().daemon) is True


def test_a_forked_child_starts_its_own_thread() -> None:
    run_on_model_thread("m", thread_name)  # the parent's thread exists before the fork
    pid = os.fork()
    if pid == 0:  # the child: without a fresh thread this call would wait for ever
        signal.alarm(20)
        ok = run_on_model_thread("m", thread_name) == f"{THREAD_NAME} m"
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_other_devices_run_in_the_callers_thread() -> None:
    assert run_for_device(torch.device("meta"), "m", thread_name) == thread_name()
    assert run_for_device(torch.device("cpu"), "m", thread_name) == f"{THREAD_NAME} m"


def test_a_cpu_model_runs_its_forwards_on_its_thread(clip_encoder: Encoder) -> None:
    model: Any = getattr(clip_encoder, "model")  # noqa: B009 - an HFEncoder's module
    seen: list[str] = []
    handle = model.text_model.register_forward_pre_hook(lambda *_: seen.append(thread_name()))
    try:
        with ThreadPoolExecutor(2) as pool:
            pool.submit(clip_encoder.encode_texts, ["a red bicycle"]).result()
    finally:
        handle.remove()
    assert seen and set(seen) == {f"{THREAD_NAME} {clip_encoder.name}"}


def test_a_cpu_model_is_loaded_on_the_thread_it_runs_on(
    tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built_on: list[str] = []

    def recording(*args: Any, **kwargs: Any) -> ClipEncoder:
        built_on.append(thread_name())
        return ClipEncoder(*args, **kwargs)

    monkeypatch.setattr(loading, "ClipEncoder", recording)
    settings = EncoderSettings(models=(str(tiny_clip_dir),), device="cpu", dtype="float32")
    loading.load_encoder(str(tiny_clip_dir), settings)
    assert built_on == [f"{THREAD_NAME} {tiny_clip_dir}"]
