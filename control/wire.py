"""Limits on a request's repeated fields, checked on its bytes before it is parsed.

Parsing a message builds every element of its repeated fields: a 64 MB PublishRequest of
empty events is 32 million Event objects (seconds of CPU and gigabytes) before the
handler could count them and refuse. `count_field` walks only the top level of the wire
format, reading each field's tag and length and skipping its body, and stops one past the
limit, so an oversize repeated field is refused for the cost of reading `limit` tags.
Elements are walked too when large enough to matter: one event carrying a million
attributes (map entries are a repeated field inside it) is refused the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from helios.control.deliveries import MAX_DEAD_LETTER_IDS
from helios.daemon.errors import RequestError

# A tag or length longer than this is not protobuf (a varint carries at most 64 bits).
_MAX_VARINT_BYTES = 10
# Fields of one Event: its seven, and each `attributes` entry counts one.
MAX_EVENT_FIELDS = 1024


@dataclass(frozen=True, slots=True)
class Cap:
    """At most `limit` elements in the top-level repeated field `name` (number `number`),
    and, with `fields`, at most that many fields in each element (its map entries and
    repeated fields counted one by one)."""

    name: str
    number: int
    limit: int
    fields: int = 0


class NotProtobuf(ValueError):
    """Bytes whose top level is not a protobuf message."""


class Crowded(ValueError):
    """An element of a repeated field with more fields than allowed."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


def count_field(
    raw: bytes, number: int, stop: int, start: int = 0, end: int = -1, inner: int = 0
) -> int:
    """How many times field `number` (any field, when negative) occurs at the top level of
    the message `raw[start:end]`, counting no further than `stop`. With `inner`, each
    occurrence large enough to hold more than `inner` fields is walked too, and one that
    holds more raises Crowded with its position. Raises NotProtobuf for bytes that are
    not a message (a truncated field, a group, a wire type that does not exist)."""
    count = 0
    i = start
    end = len(raw) if end < 0 else end
    try:
        while i < end:
            tag = raw[i]
            body = -1  # where a length-delimited field's body starts
            if tag & 0x87 == 2:  # a one-byte tag of a length-delimited field: the usual case
                length = raw[i + 1]
                if length < 0x80:
                    body = i + 2
                else:
                    length, body = _varint(raw, i + 1)
                i = body + length
            else:
                tag, i = _varint(raw, i)
                wire = tag & 7
                if wire == 2:
                    length, body = _varint(raw, i)
                    i = body + length
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
            if number < 0 or tag >> 3 == number:
                # An element holds at most length / 2 fields: only a large one is walked.
                large = inner and body >= 0 and i - body >= 2 * (inner + 1)
                if large and count_field(raw, -1, inner + 1, body, i) > inner:
                    raise Crowded(count)
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
            count = count_field(raw, cap.number, cap.limit + 1, inner=cap.fields)
        except NotProtobuf:
            return
        except Crowded as exc:
            raise RequestError(
                f"{cap.name}[{exc.index}]",
                f"more than {cap.fields} fields in one of {cap.name} (refused unread)",
            ) from None
        if count > cap.limit:
            raise RequestError(
                cap.name, f"more than {cap.limit} {cap.name} in one request (refused unread)"
            )


def request_caps(max_batch: int) -> dict[str, tuple[Cap, ...]]:
    """The repeated fields of requests, each refused past its limit before parsing."""
    return {
        "PublishRequest": (Cap("events", 1, max_batch, MAX_EVENT_FIELDS),),
        "PublishStreamRequest": (Cap("events", 2, max_batch, MAX_EVENT_FIELDS),),
        "ReplayDeadLettersRequest": (Cap("ids", 1, MAX_DEAD_LETTER_IDS),),
        "TriggerActionRequest": (Cap("params", 3, 64),),
        "SetWeightsRequest": (Cap("weights", 1, 64),),
    }
