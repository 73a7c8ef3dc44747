"""The Docker recipe, checked without a Docker engine.

The Dockerfile only COPYs files and runs the scripts under ``docker/``. These tests read the
Dockerfile and docker-compose.yml for the invariants a reviewer would check by eye (non-root user,
volumes, health check, GPU reservation), then play the image's steps on this machine: the COPYs
into a scratch root, the build stage's RUN (a fresh virtual environment), and the runtime's CMD
and HEALTHCHECK commands, with the container's paths mapped into that scratch root.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
SCRIPTS = ("install.sh", "start.sh", "healthcheck.sh")


@dataclass
class Instruction:
    keyword: str
    value: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [i.value for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> str:
        found = self.values(keyword)
        assert len(found) == 1, f"expected one {keyword} in stage {self.name}, found {found}"
        return found[0]


def _exec_form(value: str) -> list[str]:
    """CMD/HEALTHCHECK in exec (JSON) form; the shell form would hide the command behind sh -c."""
    assert value.startswith("["), f"not in exec form: {value}"
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(x, str) for x in parsed)
    return parsed


def _flag(word: str) -> tuple[str, str]:
    """``--name=value`` as (name, value)."""
    name, _, value = word[2:].partition("=")
    return name, value


def _pairs(value: str) -> dict[str, str]:
    """``KEY=value ...`` as written in ENV, ARG and LABEL."""
    pairs: dict[str, str] = {}
    for token in shlex.split(value):
        key, _, assigned = token.partition("=")
        pairs[key] = assigned
    return pairs


class Recipe:
    """The Dockerfile, parsed just enough to replay it: stages, instructions, COPY semantics."""

    def __init__(self, text: str) -> None:
        self.global_args: dict[str, str] = {}
        self.stages: list[Stage] = []
        for line in self._logical_lines(text):
            keyword, _, value = line.partition(" ")
            keyword, value = keyword.upper(), value.strip()
            if keyword == "FROM":
                words = value.split()
                name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
                self.stages.append(Stage(base=words[0], name=name))
            elif not self.stages:
                assert keyword == "ARG", f"only ARG may come before the first FROM, not {keyword}"
                self.global_args.update(_pairs(value))
            else:
                self.stages[-1].instructions.append(Instruction(keyword, value))

    @staticmethod
    def _logical_lines(text: str) -> Iterator[str]:
        pending = ""
        for raw in text.splitlines():
            stripped = raw.strip()
            if not stripped or stripped.startswith("#"):
                continue  # comments may sit between continuation lines, too
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            yield pending + stripped
            pending = ""
        assert not pending, "the Dockerfile ends inside a continued line"

    @classmethod
    def load(cls) -> Recipe:
        return cls(DOCKERFILE.read_text())

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def chain(self, stage: Stage) -> list[Stage]:
        """The stage and the named stages it is built FROM, oldest first."""
        names = {s.name: s for s in self.stages if s.name}
        chain = [stage]
        while chain[0].base in names:
            chain.insert(0, names[chain[0].base])
        return chain

    def env(self, stage: Stage) -> dict[str, str]:
        env: dict[str, str] = {}
        for link in self.chain(stage):
            for value in link.values("ENV"):
                env.update(_pairs(value))
        return env

    def workdir(self, stage: Stage) -> str:
        current = "/"
        for link in self.chain(stage):
            for value in link.values("WORKDIR"):
                current = posixpath.join(current, value)
        return current

    def copies(self, stage: Stage) -> Iterator[tuple[list[str], str, str | None]]:
        """(sources, absolute destination, --from stage or None) for each COPY of ``stage``."""
        current = "/"
        for link in self.chain(stage):
            own = link is stage
            for instruction in link.instructions:
                if instruction.keyword == "WORKDIR":
                    current = posixpath.join(current, instruction.value)
                elif instruction.keyword == "COPY" and own:
                    words = shlex.split(instruction.value)
                    flags = dict(_flag(w) for w in words if w.startswith("--"))
                    *sources, dest = [w for w in words if not w.startswith("--")]
                    absolute = posixpath.join(current, dest)
                    if dest.endswith("/"):
                        absolute += "/"
                    yield sources, absolute, flags.get("from")

    def container_roots(self) -> set[str]:
        """Top-level container folders the recipe writes: these get mapped into a scratch root."""
        paths: list[str] = []
        for stage in self.stages:
            paths += [dest for _, dest, _ in self.copies(stage)]
            paths += [self.workdir(stage)]
        paths += json.loads(self.final.one("VOLUME"))
        return {"/" + p.strip("/").split("/")[0] for p in paths if p.strip("/")}

    def stage_files(self, rootfs: Path) -> None:
        """Do every COPY from the build context into ``rootfs``, as the builder would.

        Copying only what the Dockerfile names means a file it forgets to COPY is missing here too.
        ``COPY --from`` needs no work: all stages share the one scratch root.
        """
        for stage in self.stages:
            for sources, dest, from_stage in self.copies(stage):
                if from_stage is not None:
                    continue
                for source in sources:
                    origin = ROOT / source
                    assert origin.exists(), f"COPY {source}: not in the build context"
                    if origin.is_dir():  # a folder's contents land in the destination
                        shutil.copytree(
                            origin,
                            host_path(rootfs, dest),
                            dirs_exist_ok=True,
                            symlinks=True,  # as the builder does: vizdex/<room> stays a link
                            ignore=shutil.ignore_patterns("__pycache__"),
                        )
                        continue
                    target = host_path(rootfs, dest)
                    if dest.endswith("/") or len(sources) > 1:
                        target = target / origin.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target)


def host_path(rootfs: Path, container_path: str) -> Path:
    return rootfs / container_path.lstrip("/")


def map_paths(text: str, rootfs: Path, roots: set[str]) -> str:
    """Rewrite container paths under ``roots`` (e.g. /opt/vizdex/bin) to live under ``rootfs``."""
    pattern = "|".join(re.escape(r) for r in sorted(roots, key=len, reverse=True))
    return re.sub(rf"(?<![\w./-])(?:{pattern})(?=/|\b|$)", lambda m: f"{rootfs}{m[0]}", text)


def healthcheck_command(stage: Stage) -> tuple[dict[str, str], list[str]]:
    match = re.fullmatch(r"((?:--\S+\s+)*)CMD\s+(.+)", stage.one("HEALTHCHECK"))
    assert match, "HEALTHCHECK must run a command"
    options = dict(_flag(o) for o in match[1].split())
    return options, _exec_form(match[2])


def script_of(command: list[str], recipe: Recipe, rootfs: Path, name: str) -> Path:
    """The repository script that ``command`` runs, checked through the image's own COPYs."""
    assert command[0] == "sh" and len(command) == 2, f"expected ['sh', SCRIPT], got {command}"
    staged = host_path(rootfs, command[1])
    assert staged.is_file(), f"{command[1]} is not in the image"
    source = ROOT / "docker" / name
    assert staged.read_bytes() == source.read_bytes(), f"{command[1]} is not docker/{name}"
    return source


def _seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)([smh])", duration)
    assert match, duration
    return int(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2]]


# ---- the recipe, read ------------------------------------------------------------------------


def test_scripts_are_posix_sh() -> None:
    for name in SCRIPTS:
        script = ROOT / "docker" / name
        assert script.read_text().startswith("#!/bin/sh\n")
        checked = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr


def test_dockerfile_invariants(tmp_path: Path) -> None:
    recipe = Recipe.load()
    rootfs = tmp_path / "rootfs"
    recipe.stage_files(rootfs)

    # Variants: GPU by default on a CUDA 12 runtime image, CPU on slim Python; tags pinned.
    assert recipe.global_args == {"VARIANT": "gpu"}
    gpu_base, cpu_base = recipe.stage("base-gpu").base, recipe.stage("base-cpu").base
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-runtime-ubuntu\d\d\.\d\d", gpu_base)
    assert re.fullmatch(r"python:3\.1[1-3]\.\d+-slim-\w+", cpu_base)
    assert recipe.stage("base").base == "base-${VARIANT}"
    assert recipe.chain(recipe.final)[0].name == "base"

    # Build: one RUN, the install script, into the prefix the runtime copies and puts on PATH.
    build = recipe.stage("build")
    install = shlex.split(build.one("RUN"))
    assert install[:2] == ["sh", "docker/install.sh"] and install[3] == "$VARIANT"
    prefix = install[2]
    assert (host_path(rootfs, recipe.workdir(build)) / "docker/install.sh").read_bytes() == (
        ROOT / "docker/install.sh"
    ).read_bytes()
    assert ([prefix], prefix, "build") in list(recipe.copies(recipe.final))

    runtime = recipe.final
    env = recipe.env(runtime)
    assert env["PATH"].split(":")[0] == f"{prefix}/bin"

    # Non-root, by number (so runAsNonRoot can verify it) and never uid 0.
    user = runtime.one("USER")
    assert re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", user), user
    assert f"--uid {user.split(':')[0]}" in " ".join(runtime.values("RUN"))

    # Data directory and Hugging Face cache are volumes, owned by that user.
    volumes = json.loads(runtime.one("VOLUME"))
    assert env["VIZDEX_DATA_DIR"] in volumes and env["HF_HOME"] in volumes
    setup = " ".join(runtime.values("RUN"))
    assert f"chown vizdex:vizdex {' '.join(volumes)}" in setup

    # One port, the one the server listens on.
    assert runtime.one("EXPOSE") == env["VIZDEX_PORT"] == "8000"

    # CMD: migrate, then serve on all interfaces, as PID 1's replacement (exec).
    start = script_of(_exec_form(runtime.one("CMD")), recipe, rootfs, "start.sh").read_text()
    upgrade, serve = start.index("\nvizdex db upgrade\n"), start.index("\nexec vizdex serve ")
    assert upgrade < serve and "--host 0.0.0.0" in start[serve:]

    # HEALTHCHECK: the readiness endpoint, with time for the first model download.
    options, command = healthcheck_command(runtime)
    check = script_of(command, recipe, rootfs, "healthcheck.sh").read_text()
    assert "/health/ready" in check and "${VIZDEX_PORT:-8000}" in check
    assert _seconds(options["start-period"]) >= 120

    labels = _pairs(" ".join(runtime.values("LABEL")))
    assert labels["org.opencontainers.image.title"] == "vizdex"


def test_compose_matches_the_dockerfile() -> None:
    recipe = Recipe.load()
    runtime = recipe.final
    env = recipe.env(runtime)
    # Compose interpolates ${VAR:-default}; read the file as it is with no such variables set.
    text = re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m[1] or "", COMPOSE.read_text())
    compose: dict[str, Any] = yaml.safe_load(text)
    services = compose["services"]
    gpu, cpu = services["vizdex"], services["vizdex-cpu"]

    assert gpu["build"]["context"] == "." and gpu["build"]["dockerfile"] == "Dockerfile"
    assert gpu["build"]["args"]["VARIANT"] == recipe.global_args["VARIANT"] == "gpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d["driver"] == "nvidia" and "gpu" in d["capabilities"] and d.get("count") in ("all", 1)
        for d in devices
    )
    assert cpu["build"]["args"]["VARIANT"] == "cpu" and "deploy" not in cpu
    assert cpu["profiles"] == ["cpu"], "the CPU service must not start alongside the GPU one"
    assert cpu["image"] != gpu["image"]

    volumes = json.loads(runtime.one("VOLUME"))
    _, image_check = healthcheck_command(runtime)
    for service in (gpu, cpu):
        mounts = [m.split(":") for m in service["volumes"]]
        named = {target: source for source, target, *_ in mounts if source in compose["volumes"]}
        assert sorted(named) == sorted(volumes), "both image volumes get a named volume"
        # Every named volume but the databases' own: the cluster profile's PostgreSQL, the
        # milvus profile's Milvus, etcd and MinIO.
        theirs = {"vizdex-postgres", "vizdex-milvus", "vizdex-etcd", "vizdex-minio"}
        assert set(named.values()) == set(compose["volumes"]) - theirs

        container_ports = {p.split(":")[-1] for p in service["ports"]}
        assert container_ports == {runtime.one("EXPOSE")}
        assert service["healthcheck"]["test"] == ["CMD", *image_check]
        assert service["restart"] in ("unless-stopped", "always")

        # Path inputs may read the read-only photo mount, and only that.
        roots = service["environment"]["VIZDEX_ALLOWED_ROOTS"].split(",")
        read_only = {target for _, target, *mode in mounts if mode == ["ro"]}
        assert roots and set(roots) <= read_only
        assert service["environment"]["VIZDEX_MODELS"]
        assert "VIZDEX_DATA_DIR" not in service["environment"], "the image sets it: /data"
    assert env["VIZDEX_DATA_DIR"] in volumes


# ---- the recipe, run -------------------------------------------------------------------------


def _free_port() -> int:
    """A port free a moment ago: the server binds it later, so a bind failure is retried."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


PORT_TAKEN = re.compile(r"address already in use|errno 98", re.IGNORECASE)


def _clean_environment() -> dict[str, str]:
    """This machine's environment minus anything that would leak the checkout or its settings."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "HF_HOME")
    return {k: v for k, v in os.environ.items() if not k.startswith("VIZDEX_") and k not in dropped}


def _image_env(
    env: Mapping[str, str], base: Mapping[str, str], rootfs: Path, roots: set[str]
) -> dict[str, str]:
    """``base`` plus a stage's ENV, container paths mapped and ``$VAR`` expanded as Docker does."""
    result = dict(base)
    for key, value in env.items():
        result[key] = Template(map_paths(value, rootfs, roots)).safe_substitute(result)
    return result


def _status(url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.slow
def test_image_steps_run_in_a_fresh_virtual_environment(
    tmp_path: Path, tiny_clip_dir: Path
) -> None:
    """Install (CPU variant), migrate, serve, health check: the image's commands, no Docker."""
    recipe = Recipe.load()
    roots = recipe.container_roots()
    rootfs = tmp_path / "rootfs"
    recipe.stage_files(rootfs)
    build, runtime = recipe.stage("build"), recipe.final

    # -- install: the build stage's RUN, as `docker build --build-arg VARIANT=cpu` runs it.
    build_args = {**recipe.global_args, "VARIANT": "cpu"}
    for value in build.values("ARG"):
        for key, default in _pairs(value).items():
            build_args.setdefault(key, default)
    # PYTHON: the image's python3 is this test's interpreter here (a fresh venv, no site packages).
    base_env = {**_clean_environment(), **build_args, "PYTHON": sys.executable}
    install_env = _image_env(recipe.env(build), base_env, rootfs, roots)
    install_log = tmp_path / "install.log"
    server: subprocess.Popen[bytes] | None = None
    try:
        with install_log.open("wb") as log:
            installed = subprocess.run(
                ["sh", "-c", map_paths(build.one("RUN"), rootfs, roots)],
                cwd=host_path(rootfs, recipe.workdir(build)),
                env=install_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=1800,
            )
        assert installed.returncode == 0, install_log.read_text()[-5000:]
        # The runtime stage keeps the environment only; the sources must not be needed.
        shutil.rmtree(host_path(rootfs, recipe.workdir(build)))

        # -- run: the runtime's ENV, plus what `docker run -e ...` would set for this test.
        env = _image_env(recipe.env(runtime), _clean_environment(), rootfs, roots)
        env.update(VIZDEX_MODELS=str(tiny_clip_dir), HF_HUB_OFFLINE="1")
        env["VIZDEX_PORT"] = str(_free_port())  # a new one is picked when the server starts
        workdir = host_path(rootfs, recipe.workdir(runtime))
        venv_bin = Path(env["PATH"].split(":")[0])
        assert venv_bin.is_relative_to(rootfs) and (venv_bin / "vizdex").is_file()
        probe = subprocess.run(
            [
                "python3",
                "-c",
                "import vizdex.web as web, importlib.metadata as m; print(web.__file__); "
                "print(m.version('faiss-cpu')); print(m.version('torch'))",
            ],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        web_file, _faiss, torch_version = probe.stdout.split()
        assert Path(web_file).is_relative_to(venv_bin.parent), "vizdex must be installed, copied"
        assert torch_version.startswith("2.14.1")

        _, check_command = healthcheck_command(runtime)
        check = [map_paths(a, rootfs, roots) for a in check_command]

        def healthy() -> bool:
            done = subprocess.run(check, cwd=workdir, env=env, capture_output=True, timeout=30)
            return done.returncode == 0

        assert not healthy(), "the health check passes with no server: it checks nothing"

        server_log = tmp_path / "server.log"
        data_dir = Path(env["VIZDEX_DATA_DIR"])
        assert not data_dir.joinpath("catalog.db").exists()
        # The port was free when picked, but another process may bind it before the server
        # does: a server that exits on "address already in use" is started again on a new one.
        for _attempt in range(5):
            port = _free_port()
            env["VIZDEX_PORT"] = str(port)
            logged = server_log.read_text() if server_log.exists() else ""
            with server_log.open("ab") as log:
                server = subprocess.Popen(
                    [map_paths(a, rootfs, roots) for a in _exec_form(runtime.one("CMD"))],
                    cwd=workdir,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            deadline = time.monotonic() + 180
            while not healthy() and server.poll() is None:
                assert time.monotonic() < deadline, f"never ready:\n{server_log.read_text()}"
                time.sleep(1)
            this_run = server_log.read_text()[len(logged) :]
            if server.poll() is None or not PORT_TAKEN.search(this_run):
                break
        assert server is not None and server.poll() is None, server_log.read_text()

        base_url = f"http://127.0.0.1:{port}"
        assert _status(f"{base_url}/health/ready") == 200
        assert _status(f"{base_url}/health/live") == 200
        output = server_log.read_text()
        # start.sh migrated the empty catalog itself, before `vizdex serve` opened it.
        assert re.search(r"catalog sqlite:///\S+catalog\.db upgraded: \(empty\) -> \w+", output)
        assert f"Uvicorn running on http://0.0.0.0:{port}" in output
        current = subprocess.run(
            ["vizdex", "db", "current"], cwd=workdir, env=env, capture_output=True, text=True
        )
        assert current.returncode == 0 and "state:    current" in current.stdout, current.stdout
        assert Path(current.stdout.split("sqlite:///")[1].split()[0]) == data_dir / "catalog.db"

        # `docker stop`: SIGTERM to the command, which exec'd the server.
        server.send_signal(signal.SIGTERM)
        # uvicorn (>= 0.29; vizdex needs 0.30) re-raises SIGTERM after its graceful shutdown, so
        # here the process ends by the signal. (As PID 1 in a container that is a no-op: exit 0.)
        assert server.wait(timeout=60) == -signal.SIGTERM
        assert "Finished server process" in server_log.read_text()
        assert not healthy(), "the health check passes after the server stopped"
    finally:
        if server is not None and server.poll() is None:
            server.kill()
            server.wait()
        # The environment is a few GB (torch): do not leave it in pytest's kept temp folders.
        shutil.rmtree(rootfs, ignore_errors=True)
