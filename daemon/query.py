"""Filters (the `filter` string of the List and Watch calls) and paging (`page_size`,
`page_token`): one reader of each for every list."""

from __future__ import annotations

import base64
import dataclasses
import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from helios.daemon.errors import RequestError
from helios.daemon.model import Outcome, OutcomeKind
from helios.daemon.tenants import tenant_filter, unscoped

T = TypeVar("T")
MAX_PAGE = 1000
DEFAULT_PAGE = 100


class FilterError(RequestError, ValueError):
    """A filter or page token that cannot be read; `field` names the request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)


@dataclass(frozen=True)
class OutcomeQuery:
    kinds: frozenset[OutcomeKind] | None = None
    sources: frozenset[str] | None = None
    event_type: str | None = None  # a glob
    event_id: str | None = None
    since: float | None = None
    until: float | None = None
    tenant: str | None = None  # one tenant's outcomes only ("" the deployment's own)
    # (tenant, time): that tenant's outcomes before the time are past its retention
    cutoffs: tuple[tuple[str, float], ...] = ()

    @property
    def kinds_only(self) -> bool:
        return (
            self.kinds is not None
            and self.tenant is None
            and self.sources is None
            and self.event_type is None
            and self.event_id is None
            and self.since is None
            and self.until is None
            and not self.cutoffs
        )

    def retained(self, ttls: Mapping[str, float], now: float) -> OutcomeQuery:
        """This query leaving out outcomes past their tenant's retention."""
        cutoffs = tuple((tenant, now - ttl) for tenant, ttl in ttls.items())
        return dataclasses.replace(self, cutoffs=cutoffs) if cutoffs else self

    def matches(self, outcome: Outcome) -> bool:
        if self.kinds is not None and outcome.kind not in self.kinds:
            return False
        if self.tenant is not None or self.event_id is not None or self.cutoffs:
            tenant, event_id = unscoped(outcome.event_id)
            for name, cutoff in self.cutoffs:
                if name == tenant and outcome.time < cutoff:
                    return False
            if self.tenant is not None and tenant != self.tenant:
                return False
            if self.event_id is not None and event_id != self.event_id:
                return False
        if self.sources is not None and not self.sources.intersection(outcome.sources):
            return False
        if self.since is not None and outcome.time < self.since:
            return False
        if self.until is not None and outcome.time >= self.until:
            return False
        return self.event_type is None or fnmatch.fnmatchcase(outcome.event_type, self.event_type)


_TERM = re.compile(r"\s*([a-z_]+)\s*=\s*(\"[^\"]*\"|[^\s\"]+)\s*")


def _time(key: str, value: str) -> float:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        try:
            return float(value)
        except ValueError:
            raise FilterError(
                "filter", f"{key}={value!r} is not an ISO-8601 time or epoch seconds"
            ) from None


_TENANT_TERM = re.compile(r'(?<![\w"])tenant\s*=\s*("[^"]*"|[^\s"]+)')


def tenant_term(text: str) -> tuple[str | None, str]:
    """A list filter's `tenant=NAME` term taken out of it: (the tenant the listing is
    limited to, as tenant_filter decides it for the caller, the rest of the filter)."""
    named = [m.strip('"') for m in _TENANT_TERM.findall(text)]
    if len(named) > 1:
        raise FilterError("filter", "tenant= is given more than once")
    return tenant_filter(named[0] if named else None), _TENANT_TERM.sub(" ", text)


def parse_terms(text: str, keys: tuple[str, ...]) -> dict[str, str]:
    """`KEY=VALUE` terms joined by spaces or AND, each KEY one of `keys`."""
    values: dict[str, str] = {}
    rest = re.sub(r"\bAND\b", " ", text.strip())
    allowed = ", ".join(keys)
    pos = 0
    while pos < len(rest):
        if rest[pos].isspace():
            pos += 1
            continue
        match = _TERM.match(rest, pos)
        if not match:
            raise FilterError(
                "filter",
                f"cannot read {rest[pos:]!r}: expected terms KEY=VALUE with KEY in {allowed}",
            )
        key, value = match.group(1), match.group(2).strip('"')
        if key not in keys:
            raise FilterError("filter", f"unknown filter key {key!r}; expected one of {allowed}")
        values[key] = value
        pos = match.end()
    return values


def parse_time(key: str, value: str) -> float:
    """An ISO-8601 time or epoch seconds, for filter term `key`."""
    return _time(key, value)


def parse_filter(text: str) -> OutcomeQuery:
    """Read `kind=MISSING AND source=aws,gcp event_type=order.*` style filters."""
    values = parse_terms(
        text, ("kind", "source", "event_type", "event_id", "since", "until", "tenant")
    )
    kinds = None
    if "kind" in values:
        names = [k.strip().upper().removeprefix("OUTCOME_KIND_") for k in values["kind"].split(",")]
        unknown = [k for k in names if k not in OutcomeKind.__members__]
        if unknown:
            raise FilterError(
                "filter",
                f"unknown kind {unknown[0]!r}; expected {', '.join(OutcomeKind.__members__)}",
            )
        kinds = frozenset(OutcomeKind[k] for k in names)
    return OutcomeQuery(
        kinds=kinds,
        sources=frozenset(values["source"].split(",")) if "source" in values else None,
        event_type=values.get("event_type"),
        event_id=values.get("event_id"),
        since=_time("since", values["since"]) if "since" in values else None,
        until=_time("until", values["until"]) if "until" in values else None,
        # A tenant's key sees its own tenant only, whatever the filter says.
        tenant=tenant_filter(values.get("tenant")),
    )


def encode_token(sequence: int) -> str:
    return base64.urlsafe_b64encode(f"before:{sequence}".encode()).decode()


def decode_token(token: str) -> int | None:
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        prefix, _, number = text.partition(":")
        if prefix != "before":
            raise ValueError
        return int(number)
    except (ValueError, UnicodeError):
        raise FilterError("page_token", "page_token is not one this server issued") from None


@dataclass(frozen=True)
class PageRequest:
    """A checked `page_size` and `page_token`: at most MAX_PAGE items, before a number."""

    size: int
    before: int | None

    @classmethod
    def parse(cls, page_size: int, page_token: str) -> PageRequest:
        if page_size < 0:
            raise FilterError("page_size", "page_size must be >= 0")
        return cls(min(page_size or DEFAULT_PAGE, MAX_PAGE), decode_token(page_token))


def newest_first(
    items: Iterable[T],
    request: PageRequest,
    number: Callable[[T], int],
    matches: Callable[[T], bool],
) -> tuple[list[T], str]:
    """One page of `items` (oldest first, numbered increasingly), newest first, and the
    token of the next page ("" when there is none)."""
    page: list[T] = []
    for item in reversed(list(items)):
        n = number(item)
        if request.before is not None and n >= request.before:
            continue
        if matches(item):
            page.append(item)
            if len(page) == request.size:
                return page, encode_token(n)
    return page, ""
