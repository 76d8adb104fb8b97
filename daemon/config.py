"""heliosd configuration: TOML file, validation that names the bad key, env overrides.

Long because every section's model and the commented sample `heliosd config sample`
prints live side by side (a test keeps them the same), so a new key is added in one place."""

from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from helios.daemon.domain import AutomationMode
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_PREFIX = "HELIOS_"
DEFAULT_CONFIG = "helios.toml"


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the file and the key."""


# A tenant's name (docs/security.md, "Tenants").
TENANT_PATTERN = r"[a-z0-9][a-z0-9_.-]{0,63}"


class _Section(BaseModel):
    # strict: "100" is not 100 and true is not 1; no inf or nan anywhere.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _check_address(value: str, allow_empty: bool) -> str:
    if value == "" and allow_empty:
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT with a port from 0 to 65535, got {value!r}")
    return value


class DaemonConfig(_Section):
    grpc_address: str = "127.0.0.1:50051"
    console_address: str = "127.0.0.1:8080"
    data_dir: str = ".helios"
    clock: Literal["real", "simulated"] = "real"
    clock_speed: float = Field(1.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    gc_freeze_seconds: float = Field(2.0, ge=0)
    grpc_reuse_port: bool = False

    @field_validator("grpc_address")
    @classmethod
    def _grpc(cls, value: str) -> str:
        return _check_address(value, allow_empty=False)

    @field_validator("console_address")
    @classmethod
    def _console(cls, value: str) -> str:
        return _check_address(value, allow_empty=True)


class IngestConfig(_Section):
    max_payload_bytes: int = Field(1_048_576, gt=0)
    max_batch_events: int = Field(10_000, gt=0)
    queue_capacity_events: int = Field(200_000, gt=0)
    stream_wait_seconds: float = Field(5.0, ge=0)
    max_message_bytes: int = Field(64 * 1_048_576, gt=0, le=2_147_483_647)  # gRPC's int32
    max_event_id_length: int = Field(512, gt=0)
    max_event_type_length: int = Field(256, gt=0)
    max_watchers: int = Field(256, gt=0)  # WatchOutcomes streams open at once
    max_concurrent_rpcs: int = Field(1024, gt=0)  # beyond: RESOURCE_EXHAUSTED
    dead_letters_max: int = Field(1000, gt=0)  # refused webhook deliveries kept
    max_webhook_deliveries: int = Field(256, gt=0)  # read or handled at once; beyond: 503
    dead_letters_max_bytes: int = Field(64 * 1_048_576, gt=0)


class ReconcileConfig(_Section):
    window_seconds: float = Field(60.0, gt=0)
    grace_seconds: float = Field(5.0, ge=0)
    sweep_interval_seconds: float = Field(0.2, gt=0)
    metrics_retention_minutes: int = Field(1440, ge=1)
    latency_samples: int = Field(100_000, ge=100)
    max_open_windows: int = Field(1_000_000, gt=0)
    max_routes_cached: int = Field(10_000, ge=0)


class RouteConfig(_Section):
    event_type: str
    sources: list[str] = Field(default_factory=list)
    window_seconds: float | None = Field(None, gt=0)
    grace_seconds: float | None = Field(None, ge=0)
    # Only for these tenants' events (docs/security.md, "Tenants"); empty: every event.
    tenants: list[Annotated[str, Field(pattern=f"^{TENANT_PATTERN}$")]] = Field(
        default_factory=list
    )


class InputConfig(BaseModel):
    """One source plugin instance; keys other than these go to the plugin as options."""

    model_config = ConfigDict(extra="allow", frozen=True)
    plugin: str = ""
    enabled: bool = True
    tenant: str = Field("", pattern=f"^({TENANT_PATTERN})?$")  # its copies' tenant

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SourcesConfig(_Section):
    names: list[str] = Field(default_factory=lambda: ["aws", "gcp", "azure"], min_length=1)
    inputs: dict[str, InputConfig] = Field(default_factory=dict)

    @field_validator("names")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not name or not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"source name {name!r} must be letters, digits, - or _")
        if len(set(names)) != len(names):
            raise ValueError("source names must be unique")
        return names


class BloomConfig(_Section):
    """Per-source Bloom filters that remember deliveries past the index TTL."""

    enabled: bool = True
    capacity: int = Field(10_000_000, gt=0)  # event ids per source across the slices kept
    error_rate: float = Field(0.001, gt=0, lt=1)  # of one filter at its capacity
    rotate_seconds: float = Field(3600.0, gt=0)
    keep: int = Field(64, ge=1, le=64)


class IndexConfig(_Section):
    backend: str = "sqlite"
    ttl_seconds: float = Field(86_400.0, gt=0)
    max_records: int = Field(2_000_000, gt=0)
    # A tenant's records and outcomes age out sooner: tenant -> seconds (<= ttl_seconds).
    tenant_ttl_seconds: dict[str, float] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    shards: int = Field(1, ge=1, le=256)
    bloom: BloomConfig = Field(default_factory=BloomConfig)

    @model_validator(mode="after")
    def _tenant_ttls(self) -> IndexConfig:
        for tenant, seconds in self.tenant_ttl_seconds.items():
            if not re.fullmatch(TENANT_PATTERN, tenant):
                raise ValueError(
                    f"tenant_ttl_seconds: {tenant!r} is not a tenant "
                    "(1-64 of a-z, 0-9, -, _, ., a letter or digit first)"
                )
            if not 0 < seconds <= self.ttl_seconds:
                raise ValueError(
                    f"tenant_ttl_seconds.{tenant} is {seconds:g}; it must be > 0 and at most "
                    f"ttl_seconds ({self.ttl_seconds:g}): a tenant's records cannot outlive "
                    "the index's"
                )
        return self


class DetectorsConfig(_Section):
    """Which detectors watch the per-minute metrics (built by the detection work)."""

    enabled: list[str] = Field(default_factory=list)
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    history_days: int = Field(30, ge=0, le=3650)  # recorded minutes kept; 0 records none


class DecisionConfig(_Section):
    """How the MAPE-K loop ranks recovery actions (used by the decision work)."""

    method: str = "topsis"
    weighting: str = "entropy"  # a weighting plugin, or "config" for `weights`
    automation: AutomationMode = Field(AutomationMode.OBSERVE, strict=False)  # from its name
    weights: dict[str, float] = Field(default_factory=dict)  # criterion -> weight
    cycle_seconds: float = Field(60.0, gt=0)
    weights_interval_seconds: float = Field(600.0, gt=0)
    approval_ttl_seconds: float = Field(900.0, gt=0)
    verify_timeout_seconds: float = Field(600.0, gt=0)
    follow_up_seconds: float = Field(300.0, ge=0)
    breaker_failure_threshold: float = Field(0.5, gt=0, le=1)
    breaker_min_volume: int = Field(20, ge=1)
    breaker_window_seconds: float = Field(60.0, gt=0)
    breaker_open_seconds: float = Field(120.0, gt=0)

    @field_validator("weights")
    @classmethod
    def _weights(cls, weights: dict[str, float]) -> dict[str, float]:
        criteria = ("mttr_seconds", "qos_impact", "success_rate", "cost")
        if not weights:
            return weights
        unknown = sorted(set(weights) - set(criteria))
        if unknown:
            raise ValueError(f"unknown criteria {unknown}; allowed: {', '.join(criteria)}")
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError("weights must be >= 0 and not all 0")
        total = sum(weights.values())
        return {c: weights.get(c, 0.0) / total for c in criteria}


class ActionsConfig(_Section):
    """Per-action options for recovery actions (used by the decision work)."""

    options: dict[str, dict[str, Any]] = Field(default_factory=dict)


class PluginsConfig(_Section):
    """Allow- and deny-lists of plugin names (entry-point names); empty allow = all."""

    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)


class SecurityConfig(_Section):
    """Who may call heliosd, over what (docs/security.md)."""

    # "keys": every RPC, the console and /metrics need an identity (API key, or a client
    # certificate with tls_client_ca); "none": no identity is asked, allowed only when
    # every address heliosd listens on is loopback (the local demo), with a warning.
    auth: Literal["keys", "none"] = "keys"
    keys_file: str = ""  # default <data_dir>/keys.json
    tls_cert: str = ""  # PEM server certificate chain: gRPC over TLS (re-read on change)
    tls_key: str = ""  # its PEM private key
    tls_client_ca: str = ""  # PEM CA(s) of client certificates: mutual TLS
    client_roles: dict[str, str] = Field(default_factory=dict)  # certificate CN -> role
    allow_plaintext: bool = False  # plaintext on a non-loopback address (refused otherwise)
    console_hosts: list[str] = Field(default_factory=list)  # Host names the console answers
    roles: dict[str, list[str]] = Field(default_factory=dict)  # custom role -> permissions
    # OIDC bearer tokens (JWT) from your identity provider, checked against its keys.
    oidc_issuer: str = ""  # the token's `iss` must be this (empty: OIDC off)
    oidc_audience: str = ""  # and its `aud` must contain this
    oidc_jwks_file: str = ""  # the provider's JWKS (JSON), re-read when it changes
    oidc_role_claim: str = "helios_role"  # the claim naming the caller's role
    oidc_name_claim: str = "sub"  # the claim the audit trail records as the name
    oidc_tenant_claim: str = "helios_tenant"  # the claim scoping the caller to a tenant
    oidc_leeway_seconds: float = Field(60.0, ge=0, le=600)  # clock skew allowed
    # The console's sign-in through the provider (authorization code with PKCE).
    oidc_client_id: str = ""  # the console's client at the provider ("" = no such sign-in)
    oidc_client_secret_env: str = ""  # an environment variable holding its secret, if any
    oidc_authorization_endpoint: str = ""  # e.g. https://login.example.com/.../auth
    oidc_token_endpoint: str = ""  # e.g. https://login.example.com/.../token
    oidc_redirect_url: str = ""  # this console's https://HOST/oidc/callback, as registered
    rate_limits: dict[str, float] = Field(default_factory=dict)  # identity or role -> RPCs/s
    copy_limits: dict[str, float] = Field(default_factory=dict)  # identity or role -> copies/s

    @model_validator(mode="after")
    def _oidc(self) -> SecurityConfig:
        given = [bool(self.oidc_issuer), bool(self.oidc_audience), bool(self.oidc_jwks_file)]
        if any(given) and not all(given):
            raise ValueError("security.oidc_issuer, oidc_audience and oidc_jwks_file go together")
        login = {
            "oidc_authorization_endpoint": self.oidc_authorization_endpoint,
            "oidc_token_endpoint": self.oidc_token_endpoint,
            "oidc_redirect_url": self.oidc_redirect_url,
        }
        if self.oidc_client_id:
            if not self.oidc_issuer:
                raise ValueError("security.oidc_client_id needs oidc_issuer (and its JWKS)")
            for key, url in login.items():
                if not url:
                    raise ValueError(f"security.oidc_client_id needs security.{key}")
                host = url.split("://", 1)[-1].split("/", 1)[0]
                if not (url.startswith("https://") or is_loopback(host + ":0")):
                    raise ValueError(f"security.{key} must be https:// (or on loopback)")
        elif any(login.values()):
            raise ValueError("security.oidc_* endpoints need security.oidc_client_id")
        return self

    @model_validator(mode="after")
    def _pairs(self) -> SecurityConfig:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("security.tls_cert and security.tls_key go together")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("security.tls_client_ca (mutual TLS) needs tls_cert and tls_key")
        return self


class LogConfig(_Section):
    """How heliosd logs (helios.daemon.logs)."""

    format: Literal["text", "kv", "json"] = "text"
    levels: dict[str, Literal["DEBUG", "INFO", "WARNING", "ERROR"]] = Field(default_factory=dict)

    @field_validator("levels")
    @classmethod
    def _components(cls, value: dict[str, str]) -> dict[str, str]:
        from helios.daemon.logs import COMPONENT

        for name in value:
            if not COMPONENT.match(name):
                raise ValueError(
                    f"{name!r} is not a component: 'root', 'heliosd' or a helios logger "
                    "such as 'helios.pipeline'"
                )
        return value


class TelemetryConfig(_Section):
    """OpenTelemetry metrics and traces (helios.daemon.telemetry, docs/observability.md)."""

    metrics: bool = True  # OpenTelemetry metrics: /metrics beside the console, OTLP if set
    traces: bool = True  # a trace per MAPE-K decision and per sampled copy
    trace_copies_ratio: float = Field(0.0001, ge=0.0, le=1.0)  # share of copies traced
    otlp_endpoint: str = ""  # http(s)://HOST:PORT of an OTLP receiver; "" = no export
    otlp_protocol: Literal["grpc", "http"] = "grpc"
    otlp_interval_seconds: float = Field(10.0, gt=0, le=3600)
    otlp_headers_env: str = ""  # an environment variable holding "k=v,k2=v2" headers
    service_name: str = Field("heliosd", min_length=1, max_length=100)

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"expected http(s)://HOST:PORT, got {value!r}")
        return value


class SloConfig(_Section):
    """Service-level objectives and their error budgets (helios.daemon.slo)."""

    enabled: bool = True
    completeness_target: float = Field(0.999, gt=0.0, lt=1.0)
    timeliness_target: float = Field(0.99, gt=0.0, lt=1.0)
    timeliness_ms: float = Field(1000.0, gt=0)
    availability_target: float = Field(0.999, gt=0.0, lt=1.0)
    period_days: float = Field(30.0, gt=0, le=366)
    min_events: int = Field(1000, ge=1)  # a burn alert needs this many in its long window
    raise_anomalies: bool = True  # a burning completeness budget raises an anomaly


class CostConfig(_Section):
    """Unit prices for what reconciliation and recovery cost (helios.daemon.slo)."""

    currency: str = Field("USD", min_length=1, max_length=8)
    per_million_copies: float = Field(0.0, ge=0)  # reconciling a million copies
    per_replayed_copy: float = Field(0.0, ge=0)  # publishing one copy again (a replay)
    actions: dict[str, float] = Field(default_factory=dict)  # action -> price per execution

    @field_validator("actions")
    @classmethod
    def _prices(cls, value: dict[str, float]) -> dict[str, float]:
        for name, price in value.items():
            if price < 0:
                raise ValueError(f"{name}: a price is >= 0, got {price}")
        return value


def is_loopback(address: str) -> bool:
    """Whether HOST:PORT listens on loopback only (127.0.0.0/8, ::1, localhost)."""
    host = address.rpartition(":")[0].strip("[]")
    return host == "localhost" or host == "::1" or host.startswith("127.")


class Config(_Section):
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    reconcile: ReconcileConfig = Field(default_factory=ReconcileConfig)
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    routes: list[RouteConfig] = Field(default_factory=list)
    index: IndexConfig = Field(default_factory=IndexConfig)
    detectors: DetectorsConfig = Field(default_factory=DetectorsConfig)
    decision: DecisionConfig = Field(default_factory=DecisionConfig)
    actions: ActionsConfig = Field(default_factory=ActionsConfig)
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    slo: SloConfig = Field(default_factory=SloConfig)
    cost: CostConfig = Field(default_factory=CostConfig)

    @model_validator(mode="after")
    def _no_open_door(self) -> Config:
        if self.security.auth == "none":
            exposed = [
                a
                for a in (self.daemon.grpc_address, self.daemon.console_address)
                if a and not is_loopback(a)
            ]
            if exposed:
                raise ValueError(
                    f'security.auth = "none" serves {", ".join(exposed)} to the network '
                    "without credentials; it is for a local demo on loopback only: use "
                    'auth = "keys" (docs/security.md)'
                )
        return self

    @model_validator(mode="after")
    def _routes_name_known_sources(self) -> Config:
        known = set(self.sources.names)
        for i, route in enumerate(self.routes):
            unknown = [s for s in route.sources if s not in known]
            if unknown:
                raise ValueError(
                    f"routes[{i}].sources: {unknown} not in sources.names {self.sources.names}"
                )
        return self


def _format_error(path: str, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ""
        for part in item["loc"]:
            key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; `heliosd config sample` lists every key)"
        given = item.get("input")
        shown = "" if item["type"] in ("extra_forbidden", "missing") else f" (got {given!r})"
        lines.append(f"{path}: {key or '<top>'}: {message}{shown}")
    return "\n".join(lines)


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """HELIOS_SECTION__KEY=value (levels joined by two underscores) -> nested dict."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _parse_env_value(raw)
    return tree


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse(text: str, path: str = "<string>", environ: Mapping[str, str] | None = None) -> Config:
    """Validate TOML text (plus env overrides) into a Config, or raise ConfigError."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    if environ is not None:
        data = _merge(data, env_overrides(environ))
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(path, exc)) from exc


def load(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Load the config file: the given path, else $HELIOS_CONFIG, else ./helios.toml, else
    (when none of these names a file) the built-in defaults."""
    env = os.environ if environ is None else environ
    named = path or env.get("HELIOS_CONFIG")
    chosen = Path(named or DEFAULT_CONFIG)
    try:
        text = chosen.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        if named:
            raise ConfigError(f"{chosen}: no such config file") from exc
        # No file named and none here: the built-in defaults (plus any env overrides).
        return parse("", "<built-in defaults>", env)
    except OSError as exc:
        raise ConfigError(f"{chosen}: cannot read: {exc}") from exc
    return parse(text, str(chosen), env)


def route_for(routes: list[RouteConfig], event_type: str) -> RouteConfig | None:
    """The first route whose event_type glob matches."""
    for route in routes:
        if fnmatch.fnmatchcase(event_type, route.event_type):
            return route
    return None


SAMPLE = """\
# heliosd configuration. Every key is optional; the values shown are the defaults unless
# marked "example". Any key can be overridden from the environment as
# HELIOS_<SECTION>__<KEY>=value (levels joined by two underscores, value in TOML syntax),
# for example HELIOS_DAEMON__GRPC_ADDRESS="0.0.0.0:50051" or HELIOS_INDEX__TTL_SECONDS=3600.

[daemon]
grpc_address = "127.0.0.1:50051"      # IngestService, QueryService, ControlService, health
console_address = "127.0.0.1:8080"    # the NiceGUI console; "" turns it off
data_dir = ".helios"                  # where durable state goes
clock = "real"                        # real | simulated (runs clock_speed times real time)
clock_speed = 1.0
log_level = "INFO"                    # DEBUG | INFO | WARNING | ERROR
gc_freeze_seconds = 2.0               # move live records out of the cyclic GC this often; 0 = off
grpc_reuse_port = false               # true: share grpc_address with other processes (SO_REUSEPORT); false: a busy port is an error at start

[ingest]
max_payload_bytes = 1048576           # a larger payload is rejected (field "payload")
max_batch_events = 10000              # a larger batch is refused with INVALID_ARGUMENT
queue_capacity_events = 200000        # copies waiting for the reconciler; beyond: RESOURCE_EXHAUSTED
stream_wait_seconds = 5.0             # how long PublishStream waits for queue room first
max_message_bytes = 67108864          # the largest gRPC message accepted
max_event_id_length = 512             # a longer event_id is rejected (field "event_id")
max_event_type_length = 256           # a longer event_type is rejected (field "event_type")
max_watchers = 256                    # WatchOutcomes streams open at once; beyond: RESOURCE_EXHAUSTED
max_concurrent_rpcs = 1024            # RPCs served at once; beyond: RESOURCE_EXHAUSTED
dead_letters_max = 1000               # refused webhook deliveries kept (helios dlq); oldest go first
max_webhook_deliveries = 256          # webhook deliveries read or handled at once; beyond: 503 + Retry-After
dead_letters_max_bytes = 67108864     # ... and at most this many bytes of them

[reconcile]
window_seconds = 60.0                 # default window, from the first copy's arrival
grace_seconds = 5.0                   # extra wait before MISSING is declared
sweep_interval_seconds = 0.2          # how often closed windows are looked for
metrics_retention_minutes = 1440      # per-minute metrics kept (24 h)
latency_samples = 100000              # reconcile-latency samples kept for percentiles
max_open_windows = 1000000            # beyond: new batches get RESOURCE_EXHAUSTED (~0.85 KB each)
max_routes_cached = 10000             # distinct event types whose route is remembered

[sources]
names = ["aws", "gcp", "azure"]       # every source a copy may name; others are rejected

# A source plugin instance. "plugin" defaults to the table name; other keys are the
# plugin's options. The built-in simulator (example):
[sources.inputs.simulator]
plugin = "simulator"
enabled = true
rate_per_second = 20.0
event_types = ["order.created", "payment.captured"]
seed = 7
# Per-source delivery latency (lognormal, milliseconds) and fault probabilities.
latency_ms = { aws = { median = 40.0, sigma = 0.5 }, gcp = { median = 60.0, sigma = 0.5 }, azure = { median = 80.0, sigma = 0.6 } }
drop_probability = 0.0
duplicate_probability = 0.0
corrupt_probability = 0.0
delay_probability = 0.0
# Scheduled faults: kind = drop | duplicate | corrupt | delay | latency.
scenarios = [ { source = "aws", kind = "drop", probability = 0.25, start_minute = 10.0, duration_minutes = 5.0 } ]

# Routes, first match wins (example): which sources must deliver an event type, and its window.
[[routes]]
event_type = "order.*"                # a glob on event_type
sources = ["aws", "gcp", "azure"]     # empty = every source in sources.names
window_seconds = 60.0                 # default: reconcile.window_seconds
grace_seconds = 5.0                   # default: reconcile.grace_seconds
tenants = []                          # only these tenants' events; empty = every event

[index]
backend = "sqlite"                    # an index plugin: sqlite (durable, under data_dir) | redis | memory
options = { synchronous = "full" }    # sqlite: full (fsync every commit) | normal; file
                                      # redis: url, urls, cluster, prefix, member, spill_max_bytes, timeout_seconds,
                                      #   replicas, replicas_timeout_ms
ttl_seconds = 86400.0                 # outcomes age out after this
max_records = 2000000                 # and the oldest go first beyond this many (~0.8 KB each)
tenant_ttl_seconds = {}               # a tenant's records and outcomes age out sooner: { acme = 3600.0 }
shards = 1                            # event ids spread over this many indexes by jump hash (docs/storage.md)

[index.bloom]                         # who delivered what, remembered past ttl_seconds (docs/storage.md)
enabled = true                        # a copy of a forgotten event is then LATE or DUPLICATE, not a new window
capacity = 10000000                   # event ids per source across the slices kept (~18 MB per source)
error_rate = 0.001                    # of one filter at its capacity
rotate_seconds = 3600.0               # a new time slice this often...
keep = 64                             # ...and this many kept, at most 64 (hourly: 2.7 days)

[detectors]
enabled = []                          # detector plugins watching per-minute metrics
options = {}                          # per detector: { ewma = { threshold = 3.0 } }
history_days = 30                     # minutes recorded in <data_dir>/metrics (helios.ml.train --history); 0 = none

[decision]
method = "topsis"                     # MCDM method ranking recovery actions: topsis | wsm | wpm | vikor
weighting = "entropy"                 # criteria weights: entropy | critic | config (= `weights`)
automation = "observe"                # observe (decide, never act) | approve | auto
weights = {}                          # example: { mttr_seconds = 0.4, qos_impact = 0.2, success_rate = 0.3, cost = 0.1 }
cycle_seconds = 60.0                  # MAPE-K cycle; it also runs on every new anomaly
weights_interval_seconds = 600.0      # recompute the weights from the actions' track record
approval_ttl_seconds = 900.0          # an unapproved decision expires (= rejected) after this
verify_timeout_seconds = 600.0        # an action not verified by then counts as failed
follow_up_seconds = 300.0             # an action that follows up (replay_missing) repeats this long
breaker_failure_threshold = 0.5       # a source's breaker opens when this share of its copies fail...
breaker_min_volume = 20               # ...out of at least this many expected...
breaker_window_seconds = 60.0         # ...within this window
breaker_open_seconds = 120.0          # then half-opens to probe after this

# Per recovery action: policy keys (enabled, automation = observe|approve|auto,
# cooldown_seconds, max_concurrent, max_per_hour, blast_radius, timeout_seconds, retries,
# backoff_seconds), criteria estimates (mttr_seconds, qos_impact, success_rate, cost) and
# the action's own keys (docs/decide-and-heal.md: Recovery actions). Example:
[actions.options]
replay_missing = { automation = "auto", blast_radius = 10000, cooldown_seconds = 30.0 }
webhook = { url = "https://runbooks.example.com/helios", timeout_seconds = 10.0 }

[plugins]
allow = []                            # plugins to load; empty = the built-ins only, "*" = every
                                      # installed one (warned) (env: HELIOS_PLUGINS=a,b)
deny = []                             # plugin names never to load

[security]                            # who may call heliosd, over what (docs/security.md)
auth = "keys"                         # keys: every RPC, the console and /metrics need an identity
                                      # none: nothing asked; loopback addresses only (local demo)
keys_file = ""                        # API keys (hashed); default <data_dir>/keys.json
tls_cert = ""                         # PEM certificate chain: gRPC over TLS (re-read on change), console HTTPS
tls_key = ""                          # its private key
tls_client_ca = ""                    # CA of client certificates: mutual TLS
client_roles = {}                     # client certificate CN -> role, e.g. { "ingest-1" = "ingester" }
allow_plaintext = false               # serve plaintext on a non-loopback address (else refused)
console_hosts = []                    # names the console answers to besides loopback and its bind
                                      # address, e.g. ["helios.example.com"] (DNS-rebinding guard)
roles = {}                            # custom roles: { auditor = ["read"] }; permissions: read, ingest, operate, admin
oidc_issuer = ""                      # OIDC bearer tokens: the issuer (iss) they must carry...
oidc_audience = ""                    # ...the audience (aud)...
oidc_jwks_file = ""                   # ...signed by a key of this JWKS file (re-read on change)
oidc_role_claim = "helios_role"       # the claim naming the role
oidc_name_claim = "sub"               # the claim recorded as who (e.g. email)
oidc_tenant_claim = "helios_tenant"   # the claim scoping the caller to one tenant (absent: deployment-wide)
oidc_leeway_seconds = 60.0            # clock skew allowed on exp, nbf, iat
oidc_client_id = ""                   # the console's sign-in through the provider (code flow + PKCE): its client id
oidc_client_secret_env = ""           # the environment variable holding the client's secret (none for a public client)
oidc_authorization_endpoint = ""      # the provider's authorization endpoint (https)
oidc_token_endpoint = ""              # its token endpoint (https)
oidc_redirect_url = ""                # this console's https://HOST/oidc/callback, as registered at the provider
rate_limits = {}                      # RPCs per second by identity name or role: { viewer = 20.0 }
copy_limits = {}                      # copies per second published, likewise: { ingester = 50000.0 }

[log]                                 # docs/observability.md
format = "text"                       # text (for a terminal) | kv (logfmt) | json (one object a line)
levels = {}                           # per component, e.g. { "helios.pipeline" = "DEBUG" }; also at run time: helios log set

[telemetry]                           # OpenTelemetry (docs/observability.md)
metrics = true                        # meters: /metrics (Prometheus) beside the console, and OTLP if set
traces = true                         # a trace per MAPE-K decision (its id is the audit trace id) and per sampled copy
trace_copies_ratio = 0.0001           # the share of copies traced (admission, reconcile, outcome): 1 in 10,000
otlp_endpoint = ""                    # e.g. "http://127.0.0.1:4317" (grpc) or "http://127.0.0.1:4318" (http); "" = none
otlp_protocol = "grpc"                # grpc | http
otlp_interval_seconds = 10.0          # how often metrics are pushed over OTLP
otlp_headers_env = ""                 # an environment variable holding OTLP headers "k=v,k2=v2" (credentials)
service_name = "heliosd"              # service.name of what is exported

[slo]                                 # objectives, error budgets, burn-rate alerts (docs/observability.md)
enabled = true
completeness_target = 0.999           # expected deliveries that arrive within window + grace, per source and route
timeliness_target = 0.99              # COMPLETE outcomes reconciled within timeliness_ms of receipt
timeliness_ms = 1000.0
availability_target = 0.999           # copies offered that ingest accepts (refused for want of room: bad)
period_days = 30.0                    # the error budget's period
min_events = 1000                     # a burn-rate alert needs this many events (copies) in its long window
raise_anomalies = true                # a burning completeness budget of a source raises an anomaly (MAPE-K)

[cost]                                # what reconciliation and recovery cost, in money (docs/observability.md)
currency = "USD"
per_million_copies = 0.0              # reconciling a million copies
per_replayed_copy = 0.0               # publishing one copy again through its cloud
actions = {}                          # price per execution, e.g. { restart_source = 2.0, notify = 0.01 }
"""
