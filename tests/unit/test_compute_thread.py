"""CPU model work keeps to one thread per process (see encoders/compute_thread.py for why)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from vizdex.encoders import loading
from vizdex.encoders.base import Encoder
from vizdex.encoders.clip import ClipEncoder
from vizdex.encoders.compute_thread import THREAD_NAME, run_for_device, run_on_cpu_thread
from vizdex.encoders.settings import EncoderSettings


def thread_name() -> str:
    return threading.current_thread().name


def test_cpu_work_runs_on_one_named_thread_whoever_asks() -> None:
    with ThreadPoolExecutor(4) as pool:
        names = set(pool.map(lambda _: run_on_cpu_thread(thread_name), range(16)))
    assert len(names) == 1 and names.pop().startswith(THREAD_NAME)
    assert not thread_name().startswith(THREAD_NAME)


def test_the_compute_thread_calling_in_again_runs_in_place() -> None:
    # A nested submit from the one worker would wait on itself for ever.
    assert run_on_cpu_thread(run_on_cpu_thread, thread_name).startswith(THREAD_NAME)


def test_an_error_reaches_the_caller_as_itself() -> None:
    def fail() -> None:
        raise ValueError("from the compute thread")

    with pytest.raises(ValueError, match="from the compute thread"):
        run_on_cpu_thread(fail)
    assert run_on_cpu_thread(thread_name).startswith(THREAD_NAME)  # still serving


def test_other_devices_run_in_the_callers_thread() -> None:
    assert run_for_device(torch.device("meta"), thread_name) == thread_name()
    assert run_for_device(torch.device("cpu"), thread_name).startswith(THREAD_NAME)


def test_a_cpu_model_runs_its_forwards_on_the_compute_thread(clip_encoder: Encoder) -> None:
    model: Any = getattr(clip_encoder, "model")  # noqa: B009 - an HFEncoder's module
    seen: list[str] = []
    handle = model.text_model.register_forward_pre_hook(lambda *_: seen.append(thread_name()))
    try:
        with ThreadPoolExecutor(2) as pool:
            pool.submit(clip_encoder.encode_texts, ["a red bicycle"]).result()
    finally:
        handle.remove()
    assert seen and all(name.startswith(THREAD_NAME) for name in seen)


def test_a_cpu_model_is_loaded_on_the_compute_thread(
    tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built_on: list[str] = []

    def recording(*args: Any, **kwargs: Any) -> ClipEncoder:
        built_on.append(thread_name())
        return ClipEncoder(*args, **kwargs)

    monkeypatch.setattr(loading, "ClipEncoder", recording)
    settings = EncoderSettings(models=(str(tiny_clip_dir),), device="cpu", dtype="float32")
    loading.load_encoder(str(tiny_clip_dir), settings)
    assert len(built_on) == 1 and built_on[0].startswith(THREAD_NAME)
