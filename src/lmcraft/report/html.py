"""report.html: the template filled with the report's numbers and its inline PNG figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).with_name("template.html")


def fmt(value: Any, *, sign: bool = False) -> str:
    """A number as the report prints it: 4 decimals (a sign when asked), "–" for none."""
    if value is None:
        return "–"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:+.4f}" if sign else f"{value:.4f}"


def render(report: dict[str, Any], figures: dict[str, str]) -> str:
    try:
        import jinja2
    except ImportError as e:
        raise ImportError("lmcraft report needs jinja2 and matplotlib: pip install 'lmcraft[report]'") from e
    env = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    return env.from_string(TEMPLATE.read_text(encoding="utf-8")).render(r=report, figures=figures, fmt=fmt)
