"""The gRPC side of inputs and dead letters: ListInputs, ListDeadLetters and
GetDeadLetter (QueryService) and ReplayDeadLetters (ControlService), mixed into the
servicers of helios.control.server, and their protobuf conversions."""

from __future__ import annotations

from typing import Any

import grpc
from helios.control.common import ts
from helios.daemon.deadletters import DeadLetter
from helios.daemon.errors import ErrorCode, RequestError
from helios.daemon.inputs import InputView
from helios.daemon.services import Services
from helios.v1 import helios_pb2 as pb

MAX_DEAD_LETTER_IDS = 1000  # ids one ReplayDeadLetters call may name

Context = grpc.aio.ServicerContext[Any, Any]


def input_pb(view: InputView) -> pb.InputStatus:
    out = pb.InputStatus(
        name=view.name,
        plugin=view.plugin,
        kind=view.kind,
        sources=view.sources,
        path=view.path,
        verify=view.verify,
        deliveries=view.deliveries,
        copies=view.copies,
        rate_per_second=view.rate_per_second,
        errors=view.errors,
        breakers=view.breakers,
        paused=view.paused,
        details=view.details,
    )
    if view.last_delivery:
        out.last_delivery.CopyFrom(ts(view.last_delivery))
    return out


def dead_letter_pb(letter: DeadLetter, body: bool = False) -> pb.DeadLetter:
    return pb.DeadLetter(
        id=letter.id,
        at=ts(letter.at),
        input=letter.input,
        reason=letter.reason,
        status=letter.status,
        detail=letter.detail,
        method=letter.method,
        path=letter.path,
        query=letter.query,
        headers=letter.headers,
        body=letter.body if body else b"",
        body_bytes=len(letter.body),
        verified=letter.verified,
        attempts=letter.attempts,
        replays=letter.replayed,
    )


class InputQueries:
    """QueryService's input and dead-letter reads."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def ListInputs(
        self, request: pb.ListInputsRequest, context: Context
    ) -> pb.ListInputsResponse:
        return pb.ListInputsResponse(
            inputs=[input_pb(v) for v in self.services.reads.inputs()],
            unrouted_errors=dict(self.services.webhooks.unrouted),
        )

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: Context
    ) -> pb.ListDeadLettersResponse:
        if request.limit > 1000:
            raise RequestError("limit", f"limit is {request.limit}; at most 1000")
        store = self.services.webhooks.deadletters
        found = store.list(request.input, request.reason, request.limit or 100)
        return pb.ListDeadLettersResponse(
            dead_letters=[dead_letter_pb(d) for d in found],
            total=store.count(request.input, request.reason),
            dropped=store.dropped,
        )

    async def GetDeadLetter(
        self, request: pb.GetDeadLetterRequest, context: Context
    ) -> pb.GetDeadLetterResponse:
        letter = self.services.webhooks.deadletters.get(request.id)
        if letter is None:
            raise RequestError(
                "id", f"no dead letter {request.id} (see ListDeadLetters)", ErrorCode.NOT_FOUND
            )
        return pb.GetDeadLetterResponse(dead_letter=dead_letter_pb(letter, body=True))


class DeadLetterControl:
    """ControlService's ReplayDeadLetters."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def ReplayDeadLetters(
        self, request: pb.ReplayDeadLettersRequest, context: Context
    ) -> pb.ReplayDeadLettersResponse:
        if not request.ids:
            raise RequestError("ids", "name at least one dead letter id")
        if len(request.ids) > MAX_DEAD_LETTER_IDS:
            raise RequestError(
                "ids", f"{len(request.ids)} ids; at most {MAX_DEAD_LETTER_IDS} a call"
            )
        results = await self.services.operator.replay_dead_letters(list(request.ids))
        return pb.ReplayDeadLettersResponse(
            results=[
                pb.DeadLetterReplay(
                    id=letter_id,
                    accepted=not reply.error,
                    status=reply.status,
                    error=reply.error,
                    detail=str(reply.body.get("detail", "")),
                    copies=reply.copies,
                )
                for letter_id, reply in results
            ]
        )
