"""No job says `running` for ever once the process running it is gone.

Found by an adversarial run: SIGKILL `vizdex serve` during a 202 upload job and restart it, and
`GET /v1/jobs/N` still said `running` ten minutes later. A server now fails such jobs when it
starts, when one is asked for, and every REAP_INTERVAL_S for the jobs of other processes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.api_helpers import api_settings, live_server, photo_jpeg, wait_until
from vizdex.encoders.base import Encoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.indexer import serving
from vizdex.indexer.jobs import UPLOAD_INTERRUPTED
from vizdex.search import Catalog, JobState, SearchSettings

ROOT = Path(__file__).resolve().parents[2]

# A process that opens a job the way the indexer does, says so, then waits to be killed.
HOLD_A_JOB = """
import sys, time
from pathlib import Path
from vizdex.indexer.jobs import JobLocks, open_job
from vizdex.search import Catalog, JobState, SearchSettings
data = Path(sys.argv[1])
catalog = Catalog.open(SearchSettings.for_data_dir(data).catalog)
collection = catalog.get_collection("c")
locks = JobLocks(data / "locks")
job, lease, _ = open_job(catalog, locks, collection.id, kind="upload", source="3 uploads")
catalog.set_job_state(job.id, JobState.RUNNING)
print(job.id, flush=True)
time.sleep(600)
"""


def _job_state(data: Path, job_id: int) -> tuple[JobState, str | None]:
    catalog = Catalog.open(SearchSettings.for_data_dir(data).catalog)
    try:
        job = catalog.get_job(job_id)
        return job.state, job.error
    finally:
        catalog.close()


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str], int]]:
    data = tmp_path / "data"
    catalog = Catalog.open(SearchSettings.for_data_dir(data).catalog)
    catalog.create_collection("c", ("m",))
    catalog.close()
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_JOB, str(data)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert process.stdout is not None
    job_id = int(process.stdout.readline())
    try:
        yield data, process, job_id
    finally:
        process.kill()
        process.wait()


def test_a_job_whose_process_died_is_failed_when_asked_for(
    holder: tuple[Path, subprocess.Popen[str], int],
    cpu_settings: EncoderSettings,
    clip_encoder: Encoder,
) -> None:
    data, process, job_id = holder
    models = {clip_encoder.name: clip_encoder}
    with (
        live_server(api_settings(data, cpu_settings), models) as live,
        httpx.Client(base_url=live.url, timeout=60) as client,
    ):
        assert client.get(f"/v1/jobs/{job_id}").json()["state"] == "running"  # alive
        process.send_signal(signal.SIGKILL)
        process.wait()
        job = client.get(f"/v1/jobs/{job_id}").json()
    assert (job["state"], job["error"]) == ("failed", UPLOAD_INTERRUPTED)


def test_the_server_reaps_other_processes_jobs_on_its_own(
    holder: tuple[Path, subprocess.Popen[str], int],
    cpu_settings: EncoderSettings,
    clip_encoder: Encoder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, process, job_id = holder
    monkeypatch.setattr(serving, "REAP_INTERVAL_S", 0.1)
    with live_server(api_settings(data, cpu_settings), {clip_encoder.name: clip_encoder}):
        time.sleep(0.5)  # several reaper rounds while the process lives: it must be left alone
        assert _job_state(data, job_id) == (JobState.RUNNING, None)
        process.send_signal(signal.SIGKILL)
        process.wait()
        # Nobody asks for the job: the reaper alone must find it.
        wait_until(lambda: _job_state(data, job_id)[0] is JobState.FAILED, 30, "the reaper")
    assert _job_state(data, job_id) == (JobState.FAILED, UPLOAD_INTERRUPTED)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(data: Path, model: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        "PATH": os.environ["PATH"],
        "HF_HUB_OFFLINE": "1",
        "VIZDEX_DATA_DIR": str(data),
        "VIZDEX_MODELS": str(model),
        "VIZDEX_DEVICE": "cpu",
        "VIZDEX_UPLOAD_SYNC_IMAGES": "1",  # any upload of two or more is a background job
    }
    return subprocess.Popen(
        [sys.executable, "-m", "vizdex", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _ready(url: str) -> None:
    def answers() -> bool:
        try:
            return httpx.get(f"{url}/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, 120, "the server to be ready")


def test_sigkill_during_an_upload_job_then_restart(tmp_path: Path, tiny_clip_dir: Path) -> None:
    data, port = tmp_path / "data", _free_port()
    url = f"http://127.0.0.1:{port}"
    server = _serve(data, tiny_clip_dir, port)
    try:
        _ready(url)
        httpx.post(f"{url}/v1/collections", json={"name": "c"}, timeout=30)
        files = [("files", (f"{i}.jpg", photo_jpeg(i, 640, 480), "image/jpeg")) for i in range(300)]
        accepted = httpx.post(f"{url}/v1/collections/c/images", files=files, timeout=120)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        server.send_signal(signal.SIGKILL)
        server.wait()
    finally:
        server.kill()
    state, _ = _job_state(data, job_id)
    assert not state.finished, "the job finished before the kill: nothing was tested"

    server = _serve(data, tiny_clip_dir, port)
    try:
        _ready(url)
        job = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    assert (job["state"], job["error"]) == ("failed", UPLOAD_INTERRUPTED)
