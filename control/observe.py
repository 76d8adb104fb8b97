"""The gRPC side of observing heliosd: ListLogLevels, ListSlos and GetCost
(QueryService) and SetLogLevel (ControlService), mixed into the servicers of
helios.control.server."""

from __future__ import annotations

from typing import Any

import grpc
from helios.daemon import logs
from helios.daemon.services import Services
from helios.daemon.slo import SloView
from helios.v1 import helios_pb2 as pb

Context = grpc.aio.ServicerContext[Any, Any]


class ObserveQueries:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def ListLogLevels(
        self, request: pb.ListLogLevelsRequest, context: Context
    ) -> pb.ListLogLevelsResponse:
        return pb.ListLogLevelsResponse(levels=logs.levels(), format=logs.CURRENT["format"])

    async def ListSlos(self, request: pb.ListSlosRequest, context: Context) -> pb.ListSlosResponse:
        speed, simulated = self.services.observe.clock()
        return pb.ListSlosResponse(
            slos=[slo_pb(v) for v in self.services.observe.slos()],
            simulated_clock=simulated,
            clock_speed=speed,
        )

    async def GetCost(self, request: pb.GetCostRequest, context: Context) -> pb.GetCostResponse:
        view = self.services.observe.cost()
        return pb.GetCostResponse(
            currency=view.currency,
            lines=[
                pb.CostLine(
                    kind=x.kind, name=x.name, units=x.units, replayed=x.replayed, money=x.money
                )
                for x in view.lines
            ],
            total=view.total,
            prices=view.prices,
        )


def slo_pb(v: SloView) -> pb.SloStatus:
    return pb.SloStatus(
        objective=v.objective,
        scope=v.scope,
        target=v.target,
        good=v.good,
        total=v.total,
        ratio=v.ratio,
        budget_remaining=v.budget_remaining,
        recent=v.recent,
        burn=v.burn,
        firing=list(v.firing),
        since_start=v.since_start,
    )


class ObserveControl:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def SetLogLevel(
        self, request: pb.SetLogLevelRequest, context: Context
    ) -> pb.SetLogLevelResponse:
        previous, levels = self.services.operator.set_log_level(request.component, request.level)
        return pb.SetLogLevelResponse(previous=previous, levels=levels)
