"""The bottom layers import nothing of lmcraft above them: text.py imports no lmcraft module, metrics/ only
text.py and its own modules (including imports inside functions and under TYPE_CHECKING)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lmcraft"
ALLOWED = {"text.py": set(), "metrics": {"lmcraft.text", "lmcraft.metrics"}}


def _lmcraft_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            found.add(node.module or "")
    return {name for name in found if name == "lmcraft" or name.startswith("lmcraft.")}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_bottom_layers_import_only_downward(layer: str) -> None:
    files = [SRC / layer] if layer.endswith(".py") else sorted((SRC / layer).glob("*.py"))
    assert files
    for path in files:
        above = {name for name in _lmcraft_imports(path)
                 if not any(name == ok or name.startswith(ok + ".") for ok in ALLOWED[layer])}
        assert not above, f"{path.relative_to(SRC)} imports {sorted(above)}"
