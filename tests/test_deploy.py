"""docker-compose.yml agrees with the code: every queue consumed, every command exists."""

from __future__ import annotations

import re
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
