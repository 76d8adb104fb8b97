"""heliosd's logs: text, key=value or JSON lines (`log.format`), each with the trace and
span ids of what it is about, and a level per component that can change at run time
(`helios log set helios.pipeline DEBUG`, ControlService.SetLogLevel).

A record carries a trace id when it is about a traced thing: a decision's story lines
pass theirs (`extra={"trace_id": ...}`); any other record takes the OpenTelemetry span
current where it was logged, if there is one."""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
from collections.abc import Mapping

import orjson
from helios.daemon.errors import RequestError

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "kv", "json")
# What a component may be named: a logger of heliosd's ("helios", "helios.pipeline", ...),
# or "root" for everything else (libraries).
COMPONENT = re.compile(r"^(root|heliosd|helios(\.[a-z0-9_]+){0,3})$")
CURRENT = {"format": "text"}  # what configure() chose (ListLogLevels shows it)
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _ids(record: logging.LogRecord) -> tuple[str, str]:
    trace = getattr(record, "trace_id", "")
    span = getattr(record, "span_id", "")
    if trace:
        return str(trace), str(span)
    try:
        from opentelemetry import trace as otel
    except ImportError:  # pragma: no cover - a dependency; kept optional for plugins' tests
        return "", ""
    context = otel.get_current_span().get_span_context()
    if not context.is_valid:
        return "", ""
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def _fields(record: logging.LogRecord) -> dict[str, object]:
    """What a record adds beyond the standard attributes (`extra=`), ids aside."""
    return {
        k: v
        for k, v in record.__dict__.items()
        if k not in _STANDARD and k not in ("trace_id", "span_id") and not k.startswith("_")
    }


def _time(record: logging.LogRecord) -> str:
    stamp = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """`TIME LEVEL logger: message [trace=...]`: for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{_time(record)} {record.levelname} {record.name}: {record.getMessage()}"
        trace, _ = _ids(record)
        if trace:
            text += f" [trace {trace}]"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _kv_value(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\n\t'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _structured(
    formatter: logging.Formatter, record: logging.LogRecord, message: str
) -> dict[str, object]:
    """A record's fields, in order, for logfmt and JSON: when, level, logger, the message
    (under `message`), trace and span ids, what `extra=` added, an exception."""
    trace, span = _ids(record)
    data: dict[str, object] = {
        "time": _time(record),
        "level": record.levelname,
        "logger": record.name,
        message: record.getMessage(),
    }
    if trace:
        data["trace_id"] = trace
    if span:
        data["span_id"] = span
    data.update(_fields(record))
    if record.exc_info:
        data["exception"] = formatter.formatException(record.exc_info)
    return data


class KeyValueFormatter(logging.Formatter):
    """logfmt: `time=... level=... logger=... msg="..." trace_id=... span_id=...`."""

    def format(self, record: logging.LogRecord) -> str:
        pairs = _structured(self, record, "msg")
        return " ".join(f"{k}={_kv_value(v)}" for k, v in pairs.items())


class JsonFormatter(logging.Formatter):
    """One JSON object a line, for a log shipper."""

    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(_structured(self, record, "message"), default=str).decode()


FORMATTERS: Mapping[str, type[logging.Formatter]] = {
    "text": TextFormatter,
    "kv": KeyValueFormatter,
    "json": JsonFormatter,
}


def configure(
    root_level: str, fmt: str = "text", levels: Mapping[str, str] | None = None
) -> logging.Handler:
    """Send every record to stderr in `fmt`; set the root's and each component's level.
    Returns the handler (heliosd installs one; tests may remove it)."""
    CURRENT["format"] = fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FORMATTERS[fmt]())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(root_level)
    for component, level in (levels or {}).items():
        set_level(component, level)
    return handler


def check(component: str, level: str) -> tuple[str, str]:
    """The component and level, normalised, or RequestError naming what is wrong."""
    if not COMPONENT.match(component):
        raise RequestError(
            "component",
            f"{component!r} is not a component: 'root', 'heliosd' or a helios logger "
            "such as 'helios.pipeline' (`helios log levels` lists them)",
        )
    upper = level.upper()
    if upper not in LEVELS:
        raise RequestError("level", f"unknown level {level!r}; expected {', '.join(LEVELS)}")
    return component, upper


def set_level(component: str, level: str) -> str:
    """Set one component's level now; returns the level it had."""
    component, level = check(component, level)
    logger = logging.getLogger() if component == "root" else logging.getLogger(component)
    before = logging.getLevelName(logger.getEffectiveLevel())
    logger.setLevel(level)
    return str(before)


def levels() -> dict[str, str]:
    """The effective level of the root and of every helios component logged so far."""
    found = {"root": logging.getLevelName(logging.getLogger().getEffectiveLevel())}
    for name in sorted(logging.root.manager.loggerDict):
        if COMPONENT.match(name):
            found[name] = logging.getLevelName(logging.getLogger(name).getEffectiveLevel())
    return found
