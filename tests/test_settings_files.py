"""Settings from secret files: every ``ANTIHACK_X`` may come from the file ``ANTIHACK_X_FILE``
names (Docker Compose and Kubernetes secrets), and the database password from a file of its own
that PostgreSQL's image reads too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from antihack.shared.infra.settings import Settings, SettingsError

URL = "postgresql+psycopg://antihack@postgres:5432/antihack"


def secret(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("field", "text", "value"),
    [
        ("admin_token", "tok-123\n", "tok-123"),  # `echo x > file` leaves a newline: dropped
        ("secret_key", "k\r\n\n", "k"),
        ("metrics_token", " spaced value ", " spaced value "),  # only line ends are trimmed
        ("database_url", URL + "\n", URL),
        ("sync_wait_s", "12.5\n", 12.5),  # converted like the variable itself
    ],
)
def test_a_file_gives_the_value(tmp_path: Path, field: str, text: str, value: object) -> None:
    name = "ANTIHACK_" + field.upper()
    settings = Settings.from_env({name + "_FILE": secret(tmp_path, field, text)})
    assert getattr(settings, field) == value


def test_without_a_file_variable_the_variable_is_read(tmp_path: Path) -> None:
    assert Settings.from_env({"ANTIHACK_ADMIN_TOKEN": "plain"}).admin_token == "plain"
    assert Settings.from_env({}).admin_token == ""


def test_both_set_to_different_values_is_an_error_naming_both(tmp_path: Path) -> None:
    env = {
        "ANTIHACK_ADMIN_TOKEN": "plain",
        "ANTIHACK_ADMIN_TOKEN_FILE": secret(tmp_path, "t", "from-file"),
    }
    with pytest.raises(SettingsError, match="ANTIHACK_ADMIN_TOKEN and ANTIHACK_ADMIN_TOKEN_FILE"):
        Settings.from_env(env)
    env["ANTIHACK_ADMIN_TOKEN"] = ""  # empty is a value too: not "unset"
    with pytest.raises(SettingsError, match="both set"):
        Settings.from_env(env)


def test_a_child_handed_the_files_value_reads_the_same(tmp_path: Path) -> None:
    # `antihack serve` passes ANTIHACK_ADMIN_TOKEN to its children, which inherit the _FILE too.
    env = {
        "ANTIHACK_ADMIN_TOKEN": "from-file",
        "ANTIHACK_ADMIN_TOKEN_FILE": secret(tmp_path, "t", "from-file\n"),
    }
    assert Settings.from_env(env).admin_token == "from-file"


@pytest.mark.parametrize("problem", ["missing", "empty", "directory"])
def test_an_unusable_file_is_an_error_naming_the_variable(tmp_path: Path, problem: str) -> None:
    path = {
        "missing": str(tmp_path / "nope"),
        "empty": secret(tmp_path, "empty", "\n"),
        "directory": str(tmp_path),
    }[problem]
    with pytest.raises(SettingsError, match=re.escape(f"ANTIHACK_SECRET_KEY_FILE={path!r}")):
        Settings.from_env({"ANTIHACK_SECRET_KEY_FILE": path})


def test_a_bad_value_in_a_file_is_reported_like_a_bad_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="ANTIHACK_SYNC_WAIT_S='soon'"):
        Settings.from_env({"ANTIHACK_SYNC_WAIT_S_FILE": secret(tmp_path, "w", "soon")})


def test_the_database_password_file_completes_the_url(tmp_path: Path) -> None:
    # PostgreSQL's POSTGRES_PASSWORD_FILE and ours can be the same file; URL syntax in the
    # password is quoted, not parsed.
    password = "p@ss/w:rd%?#"
    env = {
        "ANTIHACK_DATABASE_URL": URL,
        "ANTIHACK_DATABASE_PASSWORD_FILE": secret(tmp_path, "pg", password + "\n"),
    }
    url = make_url(Settings.from_env(env).effective_database_url)
    assert url.password == password
    assert (url.username, url.host, url.port, url.database) == (
        "antihack",
        "postgres",
        5432,
        "antihack",
    )


def test_a_url_without_a_password_stays_as_it_is() -> None:
    assert Settings(database_url=URL).effective_database_url == URL


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "without ANTIHACK_DATABASE_URL"),
        ("postgresql+psycopg://antihack:other@postgres/antihack", "names a password"),
        ("not a url", "not a database URL"),
    ],
)
def test_the_database_password_needs_a_url_without_one(url: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings(database_url=url, database_password="pw")
