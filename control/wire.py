"""Limits on a request's repeated fields, checked on its bytes before it is parsed.

Parsing a message builds every element of its repeated fields: a 64 MB PublishRequest of
empty events is 32 million Event objects (seconds of CPU and gigabytes) before the
handler could count them and refuse. `count_field` walks only the top level of the wire
format, reading each field's tag and length and skipping its body, and stops one past the
limit, so an oversize repeated field is refused for the cost of reading `limit` tags.
"""

from __future__ import annotations

from dataclasses import dataclass

from helios.control.deliveries import MAX_DEAD_LETTER_IDS
from helios.daemon.errors import RequestError

# A tag or length longer than this is not protobuf (a varint carries at most 64 bits).
_MAX_VARINT_BYTES = 10


@dataclass(frozen=True, slots=True)
class Cap:
    """At most `limit` elements in the top-level repeated field `name` (number `number`)."""

    name: str
    number: int
    limit: int


class NotProtobuf(ValueError):
    """Bytes whose top level is not a protobuf message."""


def count_field(raw: bytes, number: int, stop: int) -> int:
    """How many times top-level field `number` occurs in the message `raw`, counting no
    further than `stop`. Raises NotProtobuf for bytes that are not a message (a truncated
    field, a group, a wire type that does not exist)."""
    count = 0
    i = 0
    end = len(raw)
    try:
        while i < end:
            tag = raw[i]
            if tag & 0x87 == 2:  # a one-byte tag of a length-delimited field: the usual case
                length = raw[i + 1]
                if length < 0x80:
                    i += 2 + length
                else:
                    length, i = _varint(raw, i + 1)
                    i += length
            else:
                tag, i = _varint(raw, i)
                wire = tag & 7
                if wire == 2:
                    length, i = _varint(raw, i)
                    i += length
                elif wire == 0:
                    _, i = _varint(raw, i)
                elif wire == 1:
                    i += 8
                elif wire == 5:
                    i += 4
                else:
                    raise NotProtobuf(f"wire type {wire} at byte {i}")
            if i > end:
                break
            if tag >> 3 == number:
                count += 1
                if count >= stop:
                    return count
    except IndexError:
        raise NotProtobuf("truncated message") from None
    if i != end:
        raise NotProtobuf("truncated message")
    return count


def _varint(raw: bytes, i: int) -> tuple[int, int]:
    byte = raw[i]
    if byte < 0x80:
        return byte, i + 1
    value = byte & 0x7F
    shift = 7
    start = i
    while True:
        i += 1
        byte = raw[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
        if i - start >= _MAX_VARINT_BYTES:
            raise NotProtobuf(f"varint longer than {_MAX_VARINT_BYTES} bytes at byte {start}")


def check_caps(raw: bytes, caps: tuple[Cap, ...]) -> None:
    """Raise RequestError naming the field when one of `caps` is exceeded. Bytes that
    are not a message pass: the parser that follows refuses them by name."""
    for cap in caps:
        # Every element takes at least two bytes (its tag and a length or value), so a
        # request shorter than that cannot exceed the cap: no walk for small requests.
        if len(raw) < 2 * (cap.limit + 1):
            continue
        try:
            count = count_field(raw, cap.number, cap.limit + 1)
        except NotProtobuf:
            return
        if count > cap.limit:
            raise RequestError(
                cap.name, f"more than {cap.limit} {cap.name} in one request (refused unread)"
            )


def request_caps(max_batch: int) -> dict[str, tuple[Cap, ...]]:
    """The repeated fields of requests, each refused past its limit before parsing."""
    return {
        "PublishRequest": (Cap("events", 1, max_batch),),
        "PublishStreamRequest": (Cap("events", 2, max_batch),),
        "ReplayDeadLettersRequest": (Cap("ids", 1, MAX_DEAD_LETTER_IDS),),
        "TriggerActionRequest": (Cap("params", 3, 64),),
        "SetWeightsRequest": (Cap("weights", 1, 64),),
    }
