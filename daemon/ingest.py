"""Validation of incoming copies: each bad one is named, counted and left out."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Mapping, Sequence

import orjson
from helios.daemon.model import Checked, CopyIn, EventRecord
from helios.daemon.tenants import SEP, TENANT
from helios.daemon.types import Rejected

MAX_ID_LENGTH = 512
MAX_TYPE_LENGTH = 256
_SORT = orjson.OPT_SORT_KEYS


MAX_DEPTH = 254  # orjson writes at most this many nested levels back out
# produced_at within what google.protobuf.Timestamp can hold (0001 to 9999).
MIN_PRODUCED, MAX_PRODUCED = -62_135_596_800.0, 253_402_300_799.0


class TooDeep(ValueError):
    pass


def canonical_digest(payload: bytes) -> bytes:
    """BLAKE2b-64 of the payload's canonical JSON (sorted keys, no whitespace).

    Raises orjson.JSONDecodeError when the payload is not JSON, TooDeep when it nests
    deeper than MAX_DEPTH (it could not be written back to compare)."""
    try:
        canonical = orjson.dumps(orjson.loads(payload), option=_SORT)
    except TypeError as exc:  # orjson's "Recursion limit reached"
        raise TooDeep(f"payload nests deeper than {MAX_DEPTH} levels") from exc
    return hashlib.blake2b(canonical, digest_size=8).digest()


def _tenant_key(key: str) -> bool:
    """TENANT<US>ID with a valid tenant and no second separator (from the API's scoping)."""
    tenant, _, rest = key.partition(SEP)
    return bool(TENANT.fullmatch(tenant)) and SEP not in rest and bool(rest)


def validate(
    copies: Sequence[CopyIn],
    sources: Collection[str],
    paused: Collection[str],
    max_payload_bytes: int,
    counts: Counter[str] | None = None,
    open_records: Mapping[str, EventRecord] | None = None,
    max_id_length: int = MAX_ID_LENGTH,
    max_type_length: int = MAX_TYPE_LENGTH,
    scoped: bool = False,
) -> tuple[list[Checked], list[Rejected]]:
    """Split a batch into good copies (with payload digests) and rejections by index.

    A payload byte-identical to the first copy of an open window was parsed already:
    its digest is reused, so most copies are parsed once, not once per source."""
    good: list[Checked] = []
    bad: list[Rejected] = []
    open_get = (open_records or {}).get
    first_in_batch: dict[str, tuple[bytes, bytes]] = {}
    for index, (event_id, source, event_type, produced_at, payload) in enumerate(copies):
        problem: tuple[str, str, str] | None = None
        digest = b""
        if not event_id:
            problem = ("event_id", "event_id is empty", "empty_event_id")
        elif SEP in event_id and not (scoped and _tenant_key(event_id)):
            problem = (
                "event_id",
                "event_id may not contain the unit separator U+001F (tenants' keys use it)",
                "event_id_invalid",
            )
        elif len(event_id) > max_id_length and (
            (length := len(event_id.rpartition(SEP)[2])) > max_id_length  # a tenant's: its id
        ):
            problem = (
                "event_id",
                f"event_id is {length} characters; at most {max_id_length}",
                "event_id_too_long",
            )
        elif source not in sources:
            problem = (
                "source",
                f"unknown source {source!r}; known sources: {', '.join(sorted(sources))}",
                "unknown_source",
            )
        elif source in paused:
            problem = ("source", f"source {source!r} is paused", "source_paused")
        elif not event_type:
            problem = ("event_type", "event_type is empty", "empty_event_type")
        elif len(event_type) > max_type_length:
            problem = (
                "event_type",
                f"event_type is {len(event_type)} characters; at most {max_type_length}",
                "event_type_too_long",
            )
        elif not MIN_PRODUCED <= produced_at <= MAX_PRODUCED:
            problem = (
                "produced_at",
                f"produced_at is {produced_at:.0f} s; a Timestamp holds years 1 to 9999",
                "produced_at_out_of_range",
            )
        elif len(payload) > max_payload_bytes:
            problem = (
                "payload",
                f"payload is {len(payload)} bytes; the limit is {max_payload_bytes}",
                "payload_too_large",
            )
        else:
            record = open_get(event_id)
            if record is not None and payload == record.payload:
                digest = record.digest
            else:
                earlier = first_in_batch.get(event_id)
                if earlier is not None and payload == earlier[0]:
                    digest = earlier[1]
                else:
                    try:
                        digest = canonical_digest(payload)
                    except orjson.JSONDecodeError as exc:
                        problem = ("payload", f"payload is not JSON: {exc}", "payload_not_json")
                    except TooDeep as exc:
                        problem = ("payload", str(exc), "payload_too_deep")
                    else:
                        if earlier is None:
                            first_in_batch[event_id] = (payload, digest)
        if problem is None:
            good.append((event_id, source, event_type, produced_at, payload, digest))
        else:
            bad.append(Rejected(index, event_id, *problem))
            if counts is not None:
                counts[problem[2]] += 1
    return good, bad
