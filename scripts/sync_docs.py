"""Rewrite the sample configuration in docs/configuration.md from `heliosd config sample`
(tests/test_docs.py fails until the two agree)."""

from __future__ import annotations

from pathlib import Path

from helios.daemon.config import SAMPLE

PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
MARK = "## The sample configuration"

text = PAGE.read_text(encoding="utf-8")
head = text[: text.index(MARK)]
PAGE.write_text(
    head
    + MARK
    + "\n\n`heliosd config sample` prints this (a test keeps the two the same):\n\n```toml\n"
    + SAMPLE
    + "```\n",
    encoding="utf-8",
)
print(f"{PAGE}: sample rewritten")
