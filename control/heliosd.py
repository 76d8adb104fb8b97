"""heliosd: run the daemon, check a config, print a sample config, list plugins.

The entry point lives outside the core: it assembles the daemon (helios.daemon) with
its front-ends (the gRPC server here in helios.control, the console in helios.ui)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence

from helios.control.common import tenant_arg
from helios.daemon import __version__
from helios.daemon import config as config_mod
from helios.daemon.config import Config, ConfigError
from helios.daemon.plugins import PluginManager, Registry, load

log = logging.getLogger("heliosd")


def _load_config(path: str | None) -> Config:
    return config_mod.load(path)


def _plugins_for(config: Config) -> tuple[PluginManager, Registry]:
    return load(config.plugins.allow, config.plugins.deny)


async def serve(config: Config, ready_file: str | None = None) -> None:
    """Run heliosd until SIGINT/SIGTERM: daemon, gRPC server and console in one loop."""
    from helios.control.server import GrpcServer
    from helios.daemon.app import Daemon

    manager, registry = _plugins_for(config)
    daemon = Daemon.build(config, manager, registry)
    # Millions of live records make CPython's full collections the main cost of ingest;
    # freeze start-up objects and let the older generations collect less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(700, 50, 1000)
    grpc_server = GrpcServer(
        daemon.services,
        config.daemon.grpc_address,
        config.ingest,
        config.security,
        config.daemon.grpc_reuse_port,
    )
    console = None
    if config.daemon.console_address:  # built first: a refused bind starts nothing
        from helios.ui.console import Console

        console = Console(daemon.services, config.daemon.console_address, config.security)
    state = _state_of(config.daemon.data_dir)
    await daemon.start()
    await grpc_server.start()
    if console is not None:
        await console.start()
        daemon.announce(f"{console.scheme}://{console.address}")
    host = config.daemon.grpc_address.rpartition(":")[0]
    if config.security.auth == "none":
        log.warning(
            "security.auth = none: NO credentials are asked on gRPC or the console; anyone "
            "who can reach %s may approve, trigger and change modes (the local demo only)",
            host,
        )
    grpc_at = f"{host}:{grpc_server.port}"
    clock = config.daemon.clock
    log.info(
        "heliosd %s serving\n"
        "  console  %s\n"
        "  gRPC     %s%s (auth %s)\n"
        "  metrics  %s\n"
        "  state    %s (%s)\n"
        "  clock    %s\n"
        "  sources  %s; inputs %s\n"
        "  try      helios --address %s status",
        __version__,
        f"{console.scheme}://{console.address}" if console else "(off)",
        grpc_at,
        " over TLS" if grpc_server.tls else "",
        config.security.auth,
        f"{console.scheme}://{console.address}/metrics" if console else "(no console)",
        os.path.abspath(config.daemon.data_dir),
        state,
        "real (wall) time"
        if clock == "real"
        else f"SIMULATED, {config.daemon.clock_speed:g}x the wall clock "
        f"(a metrics minute every {60 / config.daemon.clock_speed:g} s of wall time)",
        ",".join(config.sources.names),
        ",".join(n for n, spec in config.sources.inputs.items() if spec.enabled) or "(none)",
        grpc_at,
    )
    if ready_file:
        with open(ready_file, "w", encoding="utf-8") as f:
            f.write(f"{grpc_server.port} {console.port if console else 0}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("heliosd stopping")
    if console:
        await console.stop()
    await grpc_server.stop()
    await daemon.stop()


def _state_of(data_dir: str) -> str:
    """Whether the data directory holds a previous run's state (read before start)."""
    try:
        kept = [p for p in os.listdir(data_dir) if p != "heliosd.lock"]
    except FileNotFoundError:
        return "fresh: a new data directory"
    except OSError as exc:
        return f"unreadable: {exc}"
    return "resumed: a previous run's state" if kept else "fresh: an empty data directory"


def _cmd_run(args: argparse.Namespace) -> int:
    config = _load_config(args.config)
    from helios.daemon import logs

    logs.configure(config.daemon.log_level, config.log.format, config.log.levels)
    if not (args.config or os.environ.get("HELIOS_CONFIG") or os.path.exists("helios.toml")):
        log.info(
            "no helios.toml here: running on the built-in defaults "
            "(`heliosd config sample` shows them)"
        )
    asyncio.run(serve(config, args.ready_file))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    path = args.file or args.config
    config = _load_config(path)
    manager, registry = _plugins_for(config)
    # Phase one of the daemon: plugin names, each input's, detector's and action's
    # options. It opens no state, so a live daemon on the same data directory is untouched.
    from helios.daemon.app import Daemon

    Daemon.build(config, manager, registry)
    shown = path or os.environ.get("HELIOS_CONFIG") or config_mod.DEFAULT_CONFIG
    if not os.path.exists(shown):
        shown = f"no {shown} here; the built-in defaults"
    print(
        f"{shown}: OK ({len(config.sources.names)} sources, {len(config.routes)} routes, "
        f"{len(config.sources.inputs)} inputs, index {config.index.backend})"
    )
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    sys.stdout.write(config_mod.SAMPLE)
    return 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    config = _load_config(args.config) if args.config or os.path.exists("helios.toml") else Config()
    manager, registry = _plugins_for(config)
    provides: dict[str, list[str]] = {}
    for kind, entries in registry.kinds().items():
        for name, entry in entries.items():
            provides.setdefault(entry.plugin, []).append(f"{kind}:{name}")
    if args.json:
        import json

        print(
            json.dumps(
                [
                    {
                        "name": p.name,
                        "distribution": p.distribution,
                        "version": p.version,
                        "builtin": p.builtin,
                        "hooks": p.hooks,
                        "provides": provides.get(p.name, []),
                    }
                    for p in manager.plugins
                ],
                indent=2,
            )
        )
        return 0
    rows = [("PLUGIN", "DISTRIBUTION", "VERSION", "HOOKS", "PROVIDES")]
    for p in manager.plugins:
        rows.append(
            (
                p.name,
                p.distribution,
                p.version,
                ",".join(p.hooks),
                ",".join(provides.get(p.name, [])),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
    for name, why in sorted(manager.skipped.items()):
        print(f"skipped {name}: {why}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="heliosd", description="The HELIOS daemon.")
    parser.add_argument(
        "--version",
        action="version",
        version=f"heliosd {__version__}",
    )
    parser.add_argument(
        "-c", "--config", help="config file (default: $HELIOS_CONFIG, else ./helios.toml)"
    )
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the daemon (the default)")
    run.add_argument("--ready-file", help="write 'GRPC_PORT CONSOLE_PORT' here once serving")
    check = sub.add_parser("check-config", help="validate a config without starting anything")
    check.add_argument("file", nargs="?")
    cfg = sub.add_parser("config", help="config helpers")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    cfg_sub.add_parser("sample", help="print a commented sample config")
    plugins = sub.add_parser("plugins", help="list loaded plugins, versions and hooks")
    plugins.add_argument("--json", action="store_true")
    keys = sub.add_parser(
        "keys", help="API keys in the data directory (the first admin key; docs/security.md)"
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key and print its secret once")
    create.add_argument("--name", required=True, help="who holds it (the audit trail's name)")
    create.add_argument("--role", required=True, help="viewer, ingester, operator, admin, ...")
    create.add_argument("--expires-days", type=float, help="default: never")
    create.add_argument(
        "--tenant", default="", type=tenant_arg, help="scope it to one tenant (default: all)"
    )
    keys_sub.add_parser("list", help="the keys, without their secrets")
    revoke = keys_sub.add_parser("revoke", help="stop a key now")
    revoke.add_argument("id")
    return parser


def _cmd_keys(args: argparse.Namespace) -> int:
    """Key management on the host, through the key file (works with heliosd running or
    not; a running heliosd re-reads the file)."""
    import math
    import time
    from pathlib import Path

    from helios.daemon.errors import RequestError
    from helios.daemon.identity import KeyStore, roles_from

    config = _load_config(args.config)
    security = config.security
    path = Path(security.keys_file or Path(config.daemon.data_dir) / "keys.json")
    store = KeyStore(path, roles_from(security.roles))
    try:
        if args.keys_command == "create":
            days = args.expires_days
            if days is not None and (not math.isfinite(days) or days <= 0):
                print("heliosd: --expires-days must be a number > 0", file=sys.stderr)
                return 2
            key, secret = store.create(
                args.name, args.role, None if days is None else days * 86400, args.tenant
            )
            print(
                f"created API key {key.id} for {key.name} (role {key.role}); "
                "its secret, shown once:"
            )
            print(secret)
        elif args.keys_command == "list":
            now = time.time()
            print(f"{'ID':<10}{'NAME':<24}{'ROLE':<10}{'TENANT':<16}STATE")
            for k in store.list():
                print(f"{k.id:<10}{k.name:<24}{k.role:<10}{k.tenant or '-':<16}{k.state(now)}")
        else:
            key = store.revoke(args.id)
            print(f"revoked API key {key.id} ({key.name})")
    except RequestError as exc:
        print(f"heliosd: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        args.command = "run"
        args.ready_file = None
    handlers = {
        "run": _cmd_run,
        "check-config": _cmd_check,
        "config": _cmd_sample,
        "plugins": _cmd_plugins,
        "keys": _cmd_keys,
    }
    try:
        return handlers[args.command](args)
    except ConfigError as exc:
        print(f"heliosd: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"heliosd: {exc}", file=sys.stderr)
        from helios.daemon.errors import PlaintextRefused

        return 2 if isinstance(exc, PlaintextRefused) else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
