"""Small helpers every console page uses."""

from __future__ import annotations

from datetime import UTC, datetime

from helios.daemon.identity import Identity
from nicegui import ui


def clock_text(t: float) -> str:
    """HH:MM:SS (UTC) of an epoch time; "-" for none."""
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S") if t else "-"


def columns(*names: str) -> list[dict[str, str]]:
    """Table columns whose label and row field are the name itself."""
    return [{"name": n, "label": n, "field": n, "align": "left"} for n in names]


def allowed(user: Identity, permission: str) -> bool:
    """Whether the signed-in identity may do this; says so in the page when not (the
    buttons are disabled too: this is the check that holds if a click gets through)."""
    if user.may(permission):
        return True
    ui.notify(f"{user.name} ({user.role}) may not {permission}", type="negative")
    return False
