"""Small helpers every console page uses."""

from __future__ import annotations

from datetime import UTC, datetime


def clock_text(t: float) -> str:
    """HH:MM:SS (UTC) of an epoch time; "-" for none."""
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S") if t else "-"


def columns(*names: str) -> list[dict[str, str]]:
    """Table columns whose label and row field are the name itself."""
    return [{"name": n, "label": n, "field": n, "align": "left"} for n in names]
