"""Layers point one way (issue #17): which of our packages each package may import.

Read from the source with ``ast`` (every import, at module level or inside a function), so a
lazy import that would cross a layer is caught too. ``antihack.shared.choices``, the capture
format's bindings (``antihack.shared.proto``) and ``antihack.shared`` itself (its ``__init__``
only sets environment defaults) are leaves every layer may name.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LEAVES = ("antihack.shared.choices", "antihack.shared.proto")
# Package (a folder of the checkout) -> the packages of ours it may import, itself included.
ALLOWED: dict[str, tuple[str, ...]] = {
    "shared/infra": ("antihack.shared.infra",),
    "shared/domain": ("antihack.shared.infra", "antihack.shared.domain"),
    "shared/sdk": ("antihack.shared.infra", "antihack.shared.domain", "antihack.shared.sdk"),
    "api": ("antihack.shared.infra", "antihack.shared.domain", "antihack.api"),
    "worker": (
        "antihack.shared.infra",
        "antihack.shared.domain",
        "antihack.worker",
        "antihack.models",
    ),
    # The CLI is the top: it starts everything (lazily, tests/test_cli_imports.py).
    "shared/cli": ("antihack",),
}


def imported(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def crossings(folder: str) -> list[str]:
    allowed = (*ALLOWED[folder], *LEAVES)
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in sorted(imported(path)):
            if name.split(".")[0] != "antihack" or name == "antihack":
                continue
            if name == "antihack.shared":
                continue
            if not any(name == a or name.startswith(a + ".") for a in allowed):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_each_layer_imports_only_the_layers_below_it(folder: str) -> None:
    assert crossings(folder) == []


def test_the_check_sees_a_crossing(tmp_path: Path) -> None:
    """The rule can fail: a function-level import of the worker from the API is a crossing."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from antihack.worker.tasks import analyze\n")
    assert "antihack.worker.tasks" in imported(source)
    assert not any("antihack.worker.tasks".startswith(a) for a in (*ALLOWED["api"], *LEAVES))


def test_the_leaves_import_nothing_of_ours() -> None:
    for path in (ROOT / "shared" / "choices.py", *sorted((ROOT / "shared" / "proto").glob("*.py"))):
        ours = [n for n in imported(path) if n.startswith("antihack.") and not n.startswith(LEAVES)]
        assert ours == [], path


def test_the_python_client_loads_no_server_layer() -> None:
    """A client application imports the SDK's client without the database, web or task layers."""
    code = (
        "import sys, antihack.shared.sdk.client\n"
        "heavy = ('sqlalchemy', 'flask', 'celery', 'cv2', 'onnxruntime', 'pydantic')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout
