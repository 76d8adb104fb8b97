"""The `webhook` source: one cloud's deliveries on one path of the console's HTTP
server, bound to one HELIOS source (docs/webhooks.md and a page per cloud).

    [sources.inputs.aws_eventbridge]
    plugin = "webhook"
    envelope = "eventbridge"        # eventbridge | sns | pubsub | eventgrid | cloudevents
    source = "aws"
    secret_env = "HELIOS_EVENTBRIDGE_KEY"

A delivery is verified (webauth.py), parsed (envelopes.py) and admitted whole through
the same admission as gRPC; the answer is 200 only once its copies are durable, 429 or
503 with Retry-After when the daemon pushes back (every one of these clouds retries
those), and a 4xx with {"error": CODE, "detail": ...} for a delivery that cannot be
taken (the daemon counts it and keeps it as a dead letter). Handshakes (Event Grid
validation, SNS subscription confirmation, CloudEvents' webhook validation) are
answered and emit no copy.

`publish` makes the input able to replay missing copies back through its cloud
(cloudpublish.py)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

import httpx
from helios.daemon.errors import ErrorCode, RequestError
from helios.daemon.hookspecs import hookimpl
from helios.daemon.model import CopyIn
from helios.daemon.types import QueueFull, Source, SourceContext, SourceFactory
from helios.daemon.webhooks import DEFAULT_MAX_BODY, WebReply, WebRequest, refusal
from helios.plugins.sources import webauth
from helios.plugins.sources.cloudinput import CloudInput, parse_options
from helios.plugins.sources.envelopes import DEFAULTS, EnvelopeError, parse
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("helios.webhook")
PATHS = {
    "eventbridge": "/ingest/aws/eventbridge",
    "sns": "/ingest/aws/sns",
    "pubsub": "/ingest/gcp/pubsub",
    "eventgrid": "/ingest/azure/eventgrid",
    "cloudevents": "/ingest/cloudevents",
}


class WebhookOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    envelope: Literal["eventbridge", "sns", "pubsub", "eventgrid", "cloudevents"]
    source: str = Field(min_length=1)
    path: str = ""  # default: PATHS[envelope]
    event_id: str = ""  # dotted paths; defaults per envelope (envelopes.DEFAULTS)
    event_type: str = ""
    produced_at: str = ""
    event_type_default: str = ""  # when a delivery names no type
    verify: Literal["", "signature", "oidc", "key", "bearer", "header", "none"] = ""
    secret_env: str = ""
    secret_file: str = ""
    header: str = "x-api-key"  # verify = "header": the header carrying the secret
    audience: str = ""  # verify = "oidc" (Pub/Sub push): the token's audience
    service_accounts: list[str] = Field(default_factory=list)  # oidc: accepted emails
    jwks_file: str = ""  # oidc: keys from a file instead of Google's
    jwks_url: str = webauth.GOOGLE_JWKS
    cert_url: str = webauth.SNS_CERT_URL  # sns: where signing certificates may come from
    subscribe_url: str = webauth.SNS_SUBSCRIBE_URL  # sns: where confirmations may go
    topics: list[str] = Field(default_factory=list)  # sns: accepted TopicArns (empty: any)
    confirm_subscriptions: bool = True  # sns: GET SubscribeURL once verified
    allowed_origins: list[str] = Field(default_factory=lambda: ["*"])  # CloudEvents validation
    max_body_bytes: int = Field(DEFAULT_MAX_BODY, gt=0, le=64 << 20)
    publish: dict[str, Any] = Field(default_factory=dict)  # replays back (cloudpublish.py)


class WebhookSource(CloudInput):
    def __init__(self, context: SourceContext, options: WebhookOptions) -> None:
        self.bind(context, options, DEFAULTS[options.envelope], options.envelope)
        mode = options.verify or webauth.DEFAULT_MODE[options.envelope]
        fits = webauth.FITS.get(mode)
        if fits is not None and options.envelope not in fits:
            raise ValueError(f"verify = {mode!r} is for {', '.join(fits)} deliveries")
        if mode == "oidc" and not options.audience:
            raise ValueError("verify = 'oidc' needs audience (the push subscription's)")
        for name in ("cert_url", "subscribe_url"):
            try:
                re.compile(getattr(options, name))
            except re.error as exc:
                raise ValueError(f"{name}: not a regular expression: {exc}") from None
        self.options = options
        self.mode = mode
        self.path = (options.path or PATHS[options.envelope]).rstrip("/")
        self.verifier: webauth.Verifier | None = None
        self.client: httpx.AsyncClient | None = None
        self.confirmed = 0
        if context.serve is None:
            raise ValueError("webhook inputs are served by the console: set daemon.console_address")

    # ---- life ------------------------------------------------------------------------
    async def start(self) -> None:
        o = self.options
        secret = ""
        if self.mode in ("key", "bearer", "header"):
            secret = webauth.read_secret(
                o.secret_env, o.secret_file, f"sources.inputs.{self.context.name}"
            )
        self.client = httpx.AsyncClient(timeout=5.0, follow_redirects=False)
        self.verifier = webauth.Verifier(
            self.mode,
            secret,
            header=o.header,
            audience=o.audience,
            emails=tuple(o.service_accounts),
            jwks_file=o.jwks_file,
            jwks_url=o.jwks_url,
            cert_url=o.cert_url,
            topics=tuple(o.topics),
            client=self.client,
        )
        if self.mode == "none":
            log.warning(
                "webhook input %s (%s): verification is off; anyone who reaches %s can "
                "deliver copies of %s",
                self.context.name,
                o.envelope,
                self.path,
                o.source,
            )
        secret_headers = frozenset({o.header.lower()}) if self.mode == "header" else frozenset()
        assert self.context.serve is not None
        self.context.serve(self.path, self.handle, o.max_body_bytes, secret_headers)
        if self.publisher is not None:
            await self.publisher.start()

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.aclose()
        if self.publisher is not None:
            await self.publisher.stop()

    def describe(self) -> dict[str, str]:
        return {}

    def info(self) -> dict[str, str]:
        o = self.options
        return {
            "kind": f"webhook {o.envelope}",
            "path": self.path,
            "verify": self.mode,
            "event_id": self.fields.event_id,
            "publish": self.publisher.describe() if self.publisher else "",
            "confirmed": str(self.confirmed) if o.envelope == "sns" else "",
            "keys": self.verifier.key_error if self.verifier else "",
        }

    # ---- a delivery ------------------------------------------------------------------
    async def handle(self, request: WebRequest) -> WebReply:
        o = self.options
        verifier = self.verifier
        assert verifier is not None
        if request.method == "OPTIONS":  # CloudEvents webhook validation (abuse protection)
            origin = request.headers.get("webhook-request-origin", "")
            if "*" not in o.allowed_origins and origin not in o.allowed_origins:
                return refusal(403, "forbidden", f"origin {origin!r} is not allowed")
            return WebReply(
                200,
                {"handshake": "webhook_validation"},
                [("webhook-allowed-origin", origin), ("webhook-allowed-rate", "*")],
            )
        trusted = request.verified
        if not trusted and self.mode != "signature":
            problem = await verifier.check(request.headers, request.query, None)
            if problem is not None:
                return refusal(problem.status, problem.code, problem.detail)
            trusted = True
        try:
            delivery = parse(
                o.envelope,
                request.headers,
                request.body,
                self.fields,
                o.source,
                self.context.clock.now(),
            )
        except EnvelopeError as exc:
            reply = refusal(exc.status, exc.code, exc.detail)
            reply.verified = trusted
            return reply
        if not trusted:  # SNS: the signature is in the message
            problem = await verifier.check(request.headers, request.query, delivery.document)
            if problem is not None:
                return refusal(problem.status, problem.code, problem.detail)
            trusted = True
        if delivery.handshake:
            return await self._handshake(
                delivery.handshake, delivery.answer or {}, delivery.document
            )
        reply = await self._admit(delivery.copies)
        reply.verified = trusted
        return reply

    async def _handshake(
        self, kind: str, answer: dict[str, Any], document: dict[str, Any] | None
    ) -> WebReply:
        if kind == "sns_subscribe" and document is not None and self.options.confirm_subscriptions:
            url = document.get("SubscribeURL", "")
            if not isinstance(url, str) or not re.match(self.options.subscribe_url, url):
                return refusal(403, "forbidden", f"SubscribeURL {url!r} is not an SNS URL")
            try:
                assert self.client is not None
                confirmed = await self.client.get(url)
                confirmed.raise_for_status()
            except httpx.HTTPError as exc:  # SNS sends the confirmation again
                return refusal(
                    503, "unavailable", f"confirming at SubscribeURL failed: {exc}", retry_after=30
                )
            self.confirmed += 1
            log.info("SNS subscription to %s confirmed", document.get("TopicArn"))
            answer = {**answer, "confirmed": True}
        elif kind == "sns_unsubscribe" and document is not None:
            log.warning("SNS unsubscribed %s from %s", self.path, document.get("TopicArn"))
        return WebReply(200, answer)

    async def _admit(self, copies: list[CopyIn]) -> WebReply:
        try:
            result = await self.context.publish(copies, whole=True)
        except QueueFull as exc:
            return refusal(429, "overloaded", str(exc), retry_after=1)
        except RequestError as exc:
            if exc.code == ErrorCode.UNAVAILABLE:
                return refusal(503, "unavailable", str(exc), retry_after=5)
            return refusal(413, "too_many_events", str(exc))
        if result.rejections:
            first = result.rejections[0]
            if first.code in ("source_paused", "throttled"):
                return refusal(503, first.code, first.reason, retry_after=30)
            return refusal(
                422,
                first.code,
                first.reason,
                rejected=[
                    {"index": r.index, "event_id": r.event_id, "error": r.code, "detail": r.reason}
                    for r in result.rejections[:20]
                ],
            )
        return WebReply(200, {"accepted": result.accepted}, copies=result.accepted)


def _factory(context: SourceContext, options: Mapping[str, Any]) -> Source:
    return WebhookSource(context, parse_options(WebhookOptions, options, "webhook"))


@hookimpl(trylast=True)
def register_sources(register: Callable[[str, SourceFactory], None]) -> None:
    register("webhook", _factory)
