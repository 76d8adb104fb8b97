"""The NiceGUI console: mounted on a FastAPI app that uvicorn serves inside heliosd's loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from helios.daemon.config import SecurityConfig, is_loopback
from helios.daemon.errors import PlaintextRefused
from helios.daemon.services import Services
from helios.ui import audit, decisions, detection, recovery, storage
from helios.ui.gate import TENANT_PAGE, Gate, who
from helios.ui.jobs import jobs_page
from helios.ui.oidc_login import OidcLogin
from helios.ui.slo import slo_page
from helios.ui.sources import sources_page
from helios.ui.state import SERIES, ConsoleState
from helios.ui.tenant import tenant_page
from helios.ui.widgets import CLOCK, lookup_card
from helios.ui.widgets import clock_text as _clock
from nicegui import ui

COLORS = {
    "COMPLETE": "#16a34a",
    "MISSING": "#dc2626",
    "INCONSISTENT": "#9333ea",
    "DUPLICATE": "#d97706",
    "LATE": "#2563eb",
}


def _health_color(completeness: float) -> str:
    if completeness >= 0.999:
        return "green"
    return "orange" if completeness >= 0.95 else "red"


def _header(active: str) -> None:
    with ui.header().classes("items-center bg-slate-900 text-white"):
        ui.label("HELIOS").classes("text-xl font-bold tracking-wide")
        ui.label("multi-cloud event reconciliation").classes("text-sm opacity-70")
        ui.space()
        if CLOCK.simulated:
            ui.label(f"{CLOCK.note()}: times shown are wall time").classes(
                "text-xs bg-amber-600 rounded px-2 helios-clock-note"
            )
        for name, path in (
            ("Overview", "/"),
            ("Detection", "/detection"),
            ("Decisions", "/decisions"),
            ("Recovery", "/recovery"),
            ("Sources", "/sources"),
            ("Storage", "/storage"),
            ("SLOs", "/slo"),
            ("Jobs", "/jobs"),
            ("Audit", "/audit"),
        ):
            link = ui.link(name, path).classes("text-white no-underline px-2")
            if name == active:
                link.classes("font-bold underline")
        ui.link("sign out", "/logout").classes("text-white text-xs no-underline px-2 opacity-70")


def _kpi(title: str, css: str) -> ui.label:
    with ui.card().classes("min-w-40"):
        ui.label(title).classes("text-xs uppercase text-gray-500")
        return ui.label("-").classes(f"text-2xl font-semibold {css}")


class Console:
    """The console web server, running as a task of heliosd's event loop."""

    def __init__(
        self, services: Services, address: str, security: SecurityConfig | None = None
    ) -> None:
        security = security or SecurityConfig()
        self.services = services
        CLOCK.set(services.observe.now, *services.observe.clock())
        self.state = ConsoleState(services.reads)
        host, _, port = address.rpartition(":")
        self.app = FastAPI(title="HELIOS console")
        self._metrics_route()
        self._pages()
        ui.run_with(
            self.app,
            title="HELIOS",
            favicon="☀",
            show_welcome_message=False,
            reconnect_timeout=10.0,
            binding_refresh_interval=None,
        )
        bound = host.strip("[]")
        hosts = {"127.0.0.1", "localhost", "::1", *security.console_hosts}
        if bound not in ("0.0.0.0", "::", ""):
            hosts.add(bound)
        # Every request and websocket passes the gate first (Host, Origin, sign-in).
        login = OidcLogin(security, services.guard) if security.oidc_client_id else None
        self.gate = Gate(
            self.app, services.guard, hosts, services.auditlog, services.webhooks, login
        )
        # HTTPS with the gRPC certificate when there is one; plaintext off loopback only
        # when allowed explicitly (behind a TLS proxy), like gRPC.
        tls = bool(security.tls_cert)
        if not tls and not is_loopback(address) and not security.allow_plaintext:
            raise PlaintextRefused(
                f"refusing to serve the console in plaintext on {address}: sign-in keys and "
                "session cookies would cross the network in the clear. Set security.tls_cert "
                "and tls_key (the console then serves HTTPS), bind it to 127.0.0.1 behind a "
                "TLS proxy, or set security.allow_plaintext = true (docs/security.md)"
            )
        self.scheme = "https" if tls else "http"
        self.server = _QuietServer(
            uvicorn.Config(
                self.gate,
                host=host,
                port=int(port),
                log_level="warning",
                ssl_certfile=security.tls_cert or None,
                ssl_keyfile=security.tls_key or None,
            )
        )
        self._task: asyncio.Task[None] | None = None
        self.port = int(port)
        self.address = address

    async def start(self) -> None:
        # Bind here rather than in uvicorn, which exits the whole process when it cannot.
        host = self.address.rpartition(":")[0]
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it: uvicorn writes a response's head and body
        # apart, and with Nagle the body waited for the client's delayed ACK, 40 ms a
        # response on a keep-alive connection (benchmarks/webhooks.py).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((host, self.port))
        except OSError as exc:
            sock.close()
            raise OSError(
                f"cannot serve the console on {self.address} (daemon.console_address): {exc}"
            ) from None
        self.port = sock.getsockname()[1]
        self.address = f"{host}:{self.port}"
        self.state.start()
        self._task = asyncio.create_task(self.server.serve([sock]), name="helios-console")
        while not self.server.started:
            if self._task.done():
                raise OSError(f"the console server stopped while starting on {self.address}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.state.stop()

    def _metrics_route(self) -> None:
        observe = self.services.observe

        @self.app.get("/metrics", include_in_schema=False)
        async def metrics() -> PlainTextResponse:
            text = await observe.prometheus()
            return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    def _pages(self) -> None:
        services = self.services
        reads = services.reads
        state = self.state
        sources = list(reads.source_names())

        @ui.page("/")
        def overview() -> None:
            _header("Overview")
            with ui.row().classes("w-full gap-4"):
                eps = _kpi("events / s", "helios-eps")
                cps = _kpi("copies / s", "helios-cps")
                open_windows = _kpi("open windows", "helios-open")
                p99 = _kpi("reconcile p99 (ms)", "helios-p99")
                total = _kpi("events seen", "helios-seen")
                rejected = _kpi("rejected copies", "helios-rejected")
            with ui.row().classes("w-full gap-4 items-stretch"):
                with ui.card().classes("min-w-72"):
                    ui.label("Completeness per source (bar: last 5 minutes)").classes(
                        "font-semibold"
                    )
                    bars: dict[str, ui.linear_progress] = {}
                    shares: dict[str, ui.label] = {}
                    for source in sources:
                        with ui.row().classes("w-full items-center helios-source"):
                            ui.label(source).classes("w-16 font-mono")
                            bars[source] = (
                                ui.linear_progress(value=1.0, show_value=False, size="14px")
                                .classes("w-40")
                                .props("color=green")
                            )
                            shares[source] = ui.label("-").classes(
                                f"font-mono helios-completeness-{source}"
                            )
                with ui.card().classes("grow"):
                    ui.label("Outcomes over time (per 2 s of wall time)").classes("font-semibold")
                    chart = ui.echart(
                        {
                            "tooltip": {"trigger": "axis"},
                            "legend": {"data": SERIES},
                            "xAxis": {"type": "category", "data": []},
                            "yAxis": {"type": "log", "min": 1, "logBase": 10},
                            "series": [
                                {
                                    "name": name,
                                    "type": "line",
                                    "showSymbol": False,
                                    "data": [],
                                    "itemStyle": {"color": COLORS[name]},
                                }
                                for name in SERIES
                            ],
                            "animation": False,
                        }
                    ).classes("w-full h-64 helios-outcome-chart")
            with ui.row().classes("w-full gap-4 items-start"):
                with ui.card().classes("grow"):
                    ui.label("Latest discrepancies").classes("font-semibold")
                    table = ui.table(
                        columns=[
                            {"name": "time", "label": "time", "field": "time"},
                            {"name": "kind", "label": "outcome", "field": "kind"},
                            {"name": "event_id", "label": "event", "field": "event_id"},
                            {"name": "sources", "label": "sources", "field": "sources"},
                        ],
                        rows=[],
                        row_key="seq",
                        pagination=10,
                    ).classes("w-full helios-discrepancies")
                lookup_card(reads, "helios")

            def refresh() -> None:
                stats = reads.counters()
                eps.set_text(f"{stats.events_per_second:,.0f}")
                cps.set_text(f"{stats.copies_per_second:,.0f}")
                open_windows.set_text(f"{stats.open_windows:,}")
                p99.set_text(f"{stats.latency.p99:.1f}")
                total.set_text(f"{stats.events_seen:,}")
                rejected.set_text(f"{sum(stats.rejections.values()):,}")
                recent = {
                    v.scope.partition(":")[2]: v.recent
                    for v in services.observe.slos()
                    if v.objective == "completeness" and v.scope.startswith("source:")
                }
                for s in stats.sources:
                    # The bar is the last 5 minutes: a 25% outage of five minutes shows
                    # there, where the total since start barely moves.
                    windows = recent.get(s.source, {})
                    now = windows.get("5m", s.completeness)
                    bars[s.source].set_value(now)
                    bars[s.source].props(f"color={_health_color(now)}")
                    paused = " (paused)" if s.paused else ""
                    shares[s.source].set_text(
                        " · ".join(
                            f"{label} {windows[w] * 100:.2f}%"
                            for w, label in (("5m", "5 m"), ("1h", "1 h"))
                            if w in windows
                        )
                        + f" · total {s.completeness * 100:.2f}%{paused}"
                    )
                points = list(state.series)
                chart.options["xAxis"]["data"] = [_clock(p.at) for p in points]
                for series in chart.options["series"]:
                    series["data"] = [p.counts[series["name"]] or None for p in points]
                chart.update()
                table.rows = [
                    {
                        "seq": o.sequence,
                        "time": _clock(o.time),
                        "kind": o.kind.name,
                        "event_id": o.event_id,
                        "sources": ",".join(o.sources),
                    }
                    for o in reversed(state.discrepancies)
                ]
                table.update()

            refresh()
            ui.timer(2.0, refresh)

        @ui.page("/decisions")
        def decisions_view(request: Request, id: str = "") -> None:
            decisions.decisions_page(services, _header, id, who(request))

        @ui.page("/recovery")
        def recovery_view(request: Request) -> None:
            recovery.recovery_page(services, _header, who(request))

        @ui.page("/jobs")
        def jobs_view() -> None:
            jobs_page(reads, _header)

        @ui.page("/detection")
        def detection_view() -> None:
            detection.detection_page(reads, _header)

        @ui.page("/storage")
        def storage_view() -> None:
            storage.storage_page(reads, _header)

        @ui.page("/slo")
        def slo_view() -> None:
            slo_page(services, _header)

        @ui.page("/sources")
        def sources_view(request: Request) -> None:
            sources_page(services, _header, who(request))

        @ui.page(TENANT_PAGE)
        def tenant_view(request: Request) -> None:
            tenant_page(reads, who(request))

        @ui.page("/audit")
        def audit_view(request: Request) -> None:
            audit.audit_page(services, _header, who(request))


class _QuietServer(uvicorn.Server):
    """uvicorn inside heliosd: heliosd owns SIGINT/SIGTERM, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield
