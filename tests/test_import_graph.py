"""The apps' import graph has no cycle: rooms <- signaling <- transcription. signaling holds
the WebRTC plumbing (ice.py, protocol.py, media.py, sfu/hooks.py) and reaches transcription
only through what transcription registers (group-call captions); rooms imports neither."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_packages(path: Path) -> set[str]:
    """Top-level packages a module imports absolutely (at module level or in a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def offenders(app: str, forbidden: set[str]) -> dict[str, set[str]]:
    modules = sorted((ROOT / app).rglob("*.py"))
    assert modules, f"no modules under {app}/"
    return {str(path.relative_to(ROOT)): hits for path in modules
            if (hits := imported_packages(path) & forbidden)}


@pytest.mark.parametrize(("app", "forbidden"), [
    ("signaling", {"transcription"}),
    ("rooms", {"signaling", "transcription"}),
])
def test_a_lower_app_never_imports_a_higher_one(app, forbidden):
    assert offenders(app, forbidden) == {}


def test_the_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from transcription.audio import x\n    import signaling.ice\n")
    assert imported_packages(module) == {"transcription", "signaling"}
