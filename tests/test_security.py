"""Trust on the gRPC path: with security.auth = "keys" (the default) no RPC runs without
an identity, each needs its role's permission, the audit trail records the identity (not
what the caller claims), keys are hashed at rest, expire and are revoked, TLS and mutual
TLS work from files, and a non-loopback plaintext bind refuses to start."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import grpc
import pytest
from helios.control.handlers import RPC_PERMISSIONS
from helios.control.server import GrpcServer
from helios.daemon.config import ConfigError
from helios.daemon.identity import KeyStore
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc

from tests.conftest import heliosd_bin
from tests.helpers import free_port, make_config, make_daemon

SECURE = """
[security]
auth = "keys"
[actions.options]
notify = { cooldown_seconds = 0.0 }
"""
RPCS = [
    (service, method)
    for service in pb.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]


def test_every_rpc_in_the_proto_needs_a_permission():
    unmapped = [
        f"{s.name}/{m.name}" for s, m in RPCS if f"{s.name}/{m.name}" not in RPC_PERMISSIONS
    ]
    assert not unmapped, f"RPCs with no permission (refused to everyone): {unmapped}"
    stale = set(RPC_PERMISSIONS) - {f"{s.name}/{m.name}" for s, m in RPCS}
    assert not stale, stale


class Secure:
    """An in-process heliosd with auth = "keys" and its gRPC server; `security` adds keys
    to the [security] section."""

    def __init__(self, tmp_path: Path, security: str = "", index: str = "memory") -> None:
        text = SECURE.replace('auth = "keys"\n', 'auth = "keys"\n' + security)
        self.config = make_config(
            text, DAEMON__DATA_DIR=f'"{tmp_path / "data"}"', INDEX__BACKEND=f'"{index}"'
        )
        self.daemon = make_daemon(self.config)
        self.server = GrpcServer(
            self.daemon.services, "127.0.0.1:0", self.config.ingest, self.config.security
        )
        self.keys = self.daemon.services.guard.keys
        self.address = f"127.0.0.1:{self.server.port}"

    async def start(self) -> None:
        await self.daemon.start()
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()
        await self.daemon.stop()

    async def __aenter__(self) -> Secure:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def key(self, role: str, name: str | None = None) -> str:
        return self.keys.create(name or f"{role}-1", role)[1]

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.address)


def bearer(secret: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {secret}"),)


async def call(channel: grpc.aio.Channel, service, method, metadata=()) -> grpc.StatusCode:
    """Call any RPC with an empty request; the status code it ends with."""
    path = f"/{service.full_name}/{method.name}"
    try:
        if method.server_streaming:
            if method.client_streaming:
                stream = channel.stream_stream(path)(iter([b""]), metadata=metadata, timeout=5)
            else:
                stream = channel.unary_stream(path)(b"", metadata=metadata, timeout=5)
            async for _ in stream:
                break
            stream.cancel()
            return grpc.StatusCode.OK
        await channel.unary_unary(path)(b"", metadata=metadata, timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_no_rpc_runs_without_credentials_or_with_a_forged_key(tmp_path):
    async with Secure(tmp_path) as s, s.channel() as channel:
        forged = "helios_00000000_" + "A" * 43
        for service, method in RPCS:
            for metadata in ((), bearer(forged), bearer("not-a-key"), (("x-api-key", forged),)):
                code = await call(channel, service, method, metadata)
                assert code == grpc.StatusCode.UNAUTHENTICATED, (method.name, metadata, code)
        refused = s.daemon.services.refused
        assert refused["GetStats:UNAUTHENTICATED"] == 4


async def test_each_role_reaches_only_what_its_permissions_allow(tmp_path):
    async with Secure(tmp_path) as s, s.channel() as channel:
        keys = {role: s.key(role) for role in ("viewer", "ingester", "operator", "admin")}
        allowed = {
            "viewer": {"read"},
            "ingester": {"ingest"},
            "operator": {"read", "operate"},
            "admin": {"read", "ingest", "operate", "admin"},
        }
        for role, secret in keys.items():
            for service, method in RPCS:
                need = RPC_PERMISSIONS[f"{service.name}/{method.name}"]
                code = await call(channel, service, method, bearer(secret))
                if need in allowed[role]:
                    assert code not in (
                        grpc.StatusCode.UNAUTHENTICATED,
                        grpc.StatusCode.PERMISSION_DENIED,
                        grpc.StatusCode.UNKNOWN,
                        grpc.StatusCode.INTERNAL,
                    ), (role, method.name, code)
                else:
                    assert code == grpc.StatusCode.PERMISSION_DENIED, (role, method.name, code)


async def test_the_audit_trail_records_the_identity_not_the_claimed_name(tmp_path):
    async with Secure(tmp_path) as s, s.channel() as channel:
        control = pb_grpc.ControlServiceStub(channel)
        operator = s.key("operator", "alice")
        reply = await control.TriggerAction(
            pb.TriggerActionRequest(
                action="notify", target="aws", dry_run=True, requested_by="mallory"
            ),
            metadata=bearer(operator),
        )
        assert reply.decision.decided_by == "alice"
        # Heliosd's own parameters cannot be set by a caller (they reach exec commands).
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await control.TriggerAction(
                pb.TriggerActionRequest(
                    action="notify", target="aws", dry_run=True, params={"diagnosis": "$(id)"}
                ),
                metadata=bearer(operator),
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "diagnosis" in caught.value.details()


async def test_observe_mode_holds_a_trigger_unless_an_admin_forces_it(tmp_path):
    async with Secure(tmp_path) as s, s.channel() as channel:
        control = pb_grpc.ControlServiceStub(channel)
        request = pb.TriggerActionRequest(action="notify", target="aws", params={"message": "x"})
        operator, admin = s.key("operator", "olga"), s.key("admin", "ada")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await control.TriggerAction(request, metadata=bearer(operator))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "observe" in caught.value.details()
        request.force = True
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await control.TriggerAction(request, metadata=bearer(operator))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        reply = await control.TriggerAction(request, metadata=bearer(admin))
        assert reply.execution.status and reply.decision.decided_by == "ada"
        spans = " ".join(sp.text for sp in reply.decision.spans)
        assert "FORCED" in spans


async def test_keys_are_hashed_at_rest_expire_are_revoked_and_rotate(tmp_path):
    async with Secure(tmp_path) as s, s.channel() as channel:
        admin = s.key("admin", "root")
        keys = pb_grpc.KeysServiceStub(channel)
        query = pb_grpc.QueryServiceStub(channel)
        made = await keys.CreateKey(
            pb.CreateKeyRequest(name="dash", role="viewer", expires_in_seconds=3600),
            metadata=bearer(admin),
        )
        assert made.secret.startswith(f"helios_{made.key.id}_")
        stored = (tmp_path / "data" / "keys.json").read_text()
        assert made.secret not in stored and admin not in stored
        assert oct(os.stat(tmp_path / "data" / "keys.json").st_mode & 0o777) == "0o600"
        await query.GetStats(pb.GetStatsRequest(), metadata=bearer(made.secret))
        rotated = await keys.RotateKey(
            pb.RotateKeyRequest(id=made.key.id, grace_seconds=0), metadata=bearer(admin)
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await query.GetStats(pb.GetStatsRequest(), metadata=bearer(made.secret))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in caught.value.details()
        await query.GetStats(pb.GetStatsRequest(), metadata=bearer(rotated.secret))
        await keys.RevokeKey(pb.RevokeKeyRequest(id=rotated.key.id), metadata=bearer(admin))
        with pytest.raises(grpc.aio.AioRpcError):
            await query.GetStats(pb.GetStatsRequest(), metadata=bearer(rotated.secret))
        listed = await keys.ListKeys(pb.ListKeysRequest(), metadata=bearer(admin))
        states = {k.id: k.state for k in listed.keys}
        assert states[made.key.id] == "revoked" and states[rotated.key.id] == "revoked"
        # An expired key: written into the file as another process would.
        expired = KeyStore(tmp_path / "data" / "keys.json").create("old", "viewer", 1.0)[1]
        data = json.loads((tmp_path / "data" / "keys.json").read_text())
        for k in data["keys"]:
            if k["name"] == "old":
                k["expires"] = k["created"] - 1
        (tmp_path / "data" / "keys.json").write_text(json.dumps(data))
        s.keys.refresh(force=True)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await query.GetStats(pb.GetStatsRequest(), metadata=bearer(expired))
        assert "expired" in caught.value.details()
        bad = await call(
            channel,
            pb.DESCRIPTOR.services_by_name["KeysService"],
            pb.DESCRIPTOR.services_by_name["KeysService"].methods_by_name["CreateKey"],
            bearer(admin),
        )
        assert bad == grpc.StatusCode.INVALID_ARGUMENT  # no name, no role: named, refused


async def test_an_unexpected_error_is_internal_with_an_id_and_no_python_text(
    tmp_path, monkeypatch, caplog
):
    async with Secure(tmp_path) as s, s.channel() as channel:
        viewer = s.key("viewer")

        def boom(*args, **kwargs):
            raise ZeroDivisionError("secret internals 42")

        monkeypatch.setattr(s.daemon.services.reads, "jobs", boom)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.QueryServiceStub(channel).ListJobs(
                pb.ListJobsRequest(), metadata=bearer(viewer)
            )
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        details = caught.value.details()
        assert "secret internals" not in details and "ZeroDivision" not in details
        incident = details.split()[2].rstrip(":")
        assert incident in caplog.text and "ZeroDivisionError" in caplog.text


def test_auth_none_is_refused_off_loopback():
    with pytest.raises(ConfigError) as caught:
        make_config('[security]\nauth = "none"\n', DAEMON__GRPC_ADDRESS='"0.0.0.0:0"')
    assert "loopback" in str(caught.value)


def run_heliosd(
    tmp_path: Path, config: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "helios.toml"
    path.write_text(config)
    return subprocess.run(
        [heliosd_bin(), "-c", str(path), "run"], capture_output=True, text=True, timeout=timeout
    )


def run_bound(
    tmp_path: Path, grpc_host: str, console_host: str
) -> subprocess.CompletedProcess[str]:
    """heliosd with the default security (keys, no TLS) bound to these hosts."""
    console = f"{console_host}:{free_port()}" if console_host else ""
    return run_heliosd(
        tmp_path,
        f"""
[daemon]
grpc_address = "{grpc_host}:{free_port()}"
console_address = "{console}"
data_dir = "{tmp_path / "data"}"
""",
    )


def test_a_non_loopback_plaintext_bind_refuses_to_start(tmp_path):
    done = run_bound(tmp_path, "0.0.0.0", "")
    assert done.returncode == 2, done.stderr
    assert "refusing to serve gRPC in plaintext" in done.stderr and "tls_cert" in done.stderr


def make_pki(tmp: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1, and client certificates (openssl)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=helios-test-ca",
    )
    for name, cn in (("server", "127.0.0.1"), ("ops", "ops-robot"), ("stranger", "stranger")):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={cn}",
        )
        (tmp / f"{name}.ext").write_text(
            "subjectAltName=IP:127.0.0.1\n" if name == "server" else "extendedKeyUsage=clientAuth\n"
        )
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
        )
    return {p.stem + p.suffix: p for p in tmp.iterdir()}


async def test_grpc_over_tls_and_mutual_tls_identities(tmp_path):
    pki = tmp_path / "pki"
    pki.mkdir()
    files = make_pki(pki)
    extra = f"""tls_cert = "{files["server.pem"]}"
tls_key = "{files["server.key"]}"
tls_client_ca = "{files["ca.pem"]}"
client_roles = {{ "ops-robot" = "operator" }}
"""
    secure = Secure(tmp_path, extra)
    daemon, server = secure.daemon, secure.server
    await secure.start()
    address = f"127.0.0.1:{server.port}"
    ca = files["ca.pem"].read_bytes()

    def creds(name: str | None) -> grpc.ChannelCredentials:
        if name is None:
            return grpc.ssl_channel_credentials(root_certificates=ca)
        return grpc.ssl_channel_credentials(
            ca, files[f"{name}.key"].read_bytes(), files[f"{name}.pem"].read_bytes()
        )

    try:
        async with grpc.aio.secure_channel(address, creds("ops")) as channel:
            stats = await pb_grpc.QueryServiceStub(channel).GetStats(pb.GetStatsRequest())
            assert stats.storage.backend  # the certificate's CN is an operator: may read
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pb_grpc.KeysServiceStub(channel).ListKeys(pb.ListKeysRequest())
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "ops-robot" in caught.value.details()
        async with grpc.aio.secure_channel(address, creds("stranger")) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pb_grpc.QueryServiceStub(channel).GetStats(pb.GetStatsRequest())
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        for channel in (
            grpc.aio.secure_channel(address, creds(None)),  # no client certificate
            grpc.aio.insecure_channel(address),  # plaintext to a TLS port
        ):
            async with channel:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await pb_grpc.QueryServiceStub(channel).GetStats(
                        pb.GetStatsRequest(), timeout=5
                    )
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        # The CLI: TLS, a client certificate, and an API key of another identity on top.
        admin = daemon.services.guard.keys.create("cli-admin", "admin")[1]
        cli = Path(heliosd_bin()).with_name("helios")
        process = await asyncio.create_subprocess_exec(
            *(str(cli), "--address", address, "--tls-ca", str(files["ca.pem"])),
            *("--tls-cert", str(files["ops.pem"]), "--tls-key", str(files["ops.key"])),
            *("--api-key", admin, "keys", "list"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        assert "cli-admin" in out.decode() and admin not in out.decode()
    finally:
        await secure.stop()


async def test_the_audit_log_records_who_did_what_from_where_and_survives_a_restart(tmp_path):
    async with Secure(tmp_path) as s, s.channel() as channel:
        operator, admin = s.key("operator", "olga"), s.key("admin", "ada")
        viewer = s.key("viewer", "vic")
        control = pb_grpc.ControlServiceStub(channel)
        await control.SetBreaker(
            pb.SetBreakerRequest(source="aws", state="open", reason="maintenance"),
            metadata=bearer(operator),
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await control.SetBreaker(
                pb.SetBreakerRequest(source="nowhere", state="open"), metadata=bearer(operator)
            )
        with pytest.raises(grpc.aio.AioRpcError):
            await control.PauseSource(pb.PauseSourceRequest(source="aws"), metadata=bearer(viewer))
        await pb_grpc.KeysServiceStub(channel).CreateKey(
            pb.CreateKeyRequest(name="ci", role="ingester"), metadata=bearer(admin)
        )
        audit = pb_grpc.AuditServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await audit.ListAuditEvents(pb.ListAuditEventsRequest(), metadata=bearer(operator))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        events = (
            await audit.ListAuditEvents(pb.ListAuditEventsRequest(), metadata=bearer(admin))
        ).events
        seen = [(e.who, e.action, e.target, e.result.split(":")[0]) for e in events]
        assert ("olga", "set_breaker", "aws open", "ok") in seen
        assert ("olga", "set_breaker", "nowhere open", "refused") in seen
        assert ("vic", "denied", "ControlService/PauseSource", "refused") in seen
        assert (
            "ada",
            "key.create",
            next(e.target for e in events if e.action == "key.create"),
            "ok",
        ) in seen
        assert all(e.peer.startswith("ipv4:127.0.0.1") for e in events)
        assert all(e.via.startswith("api key") for e in events)
    # On disk, fsynced, read back by the next start.
    again = Secure(tmp_path)
    async with again:
        kept = again.daemon.services.auditlog.query(100)
        assert {e.action for e in kept} >= {"set_breaker", "denied", "key.create"}


async def test_rate_and_copy_limits_per_identity_answer_resource_exhausted_with_a_wait(tmp_path):
    extra = """rate_limits = { viewer = 2.0 }
copy_limits = { "feeder" = 100.0 }
"""
    secure = Secure(tmp_path, extra)
    daemon, server = secure.daemon, secure.server
    await secure.start()
    keys = daemon.services.guard.keys
    viewer, feeder = keys.create("v", "viewer")[1], keys.create("feeder", "ingester")[1]
    admin = keys.create("a", "admin")[1]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            query = pb_grpc.QueryServiceStub(channel)
            for _ in range(2):
                await query.GetStats(pb.GetStatsRequest(), metadata=bearer(viewer))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await query.GetStats(pb.GetStatsRequest(), metadata=bearer(viewer))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "retry in" in caught.value.details()
            assert dict(caught.value.trailing_metadata())["retry-after"] == "1"
            for _ in range(5):  # another identity is not limited by the viewer's bucket
                await query.GetStats(pb.GetStatsRequest(), metadata=bearer(admin))
            ingest = pb_grpc.IngestServiceStub(channel)

            def batch(n: int, tag: str) -> pb.PublishRequest:
                return pb.PublishRequest(
                    events=[
                        pb.Event(event_id=f"{tag}{i}", source="aws", event_type="t", payload=b"{}")
                        for i in range(n)
                    ]
                )

            assert (await ingest.Publish(batch(100, "a"), metadata=bearer(feeder))).accepted == 100
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await ingest.Publish(batch(50, "b"), metadata=bearer(feeder))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "copy_limits" in caught.value.details()
    finally:
        await secure.stop()


def test_limits_must_be_finite_and_positive(tmp_path):
    for bad in ("0.0", "inf", "-1.0"):
        with pytest.raises(ConfigError):
            make_daemon(
                make_config(f'[security]\nauth = "none"\nrate_limits = {{ viewer = {bad} }}\n')
            )


def test_the_console_serves_https_with_the_certificate_and_refuses_plaintext_off_loopback(
    tmp_path,
):
    import httpx

    from tests.conftest import start_daemon_process, stop_daemon_process

    pki = tmp_path / "pki"
    pki.mkdir()
    files = make_pki(pki)
    home = tmp_path / "tls"
    home.mkdir()
    daemon = start_daemon_process(
        home,
        f"""
[security]
auth = "keys"
tls_cert = "{files["server.pem"]}"
tls_key = "{files["server.key"]}"
""",
        console=True,
    )
    try:
        url = f"https://127.0.0.1:{daemon.console_port}"
        with httpx.Client(verify=str(files["ca.pem"]), follow_redirects=False) as http:
            assert http.get(url + "/login").status_code == 200
            key = KeyStore(home / "data" / "keys.json").create("tina", "viewer")[1]
            signed = http.post(url + "/login", data={"api_key": key, "next": "/"})
            assert "Secure" in signed.headers["set-cookie"]  # never sent over plain HTTP
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{daemon.console_port}/login", timeout=5)
    finally:
        stop_daemon_process(daemon)
    done = run_bound(tmp_path, "127.0.0.1", "0.0.0.0")
    assert done.returncode == 2, done.stderr
    assert "refusing to serve the console in plaintext" in done.stderr


def _rsa_jwk(kid: str):
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    public.update(kid=kid, use="sig", alg="RS256")
    return private, public


async def test_oidc_bearer_tokens_are_checked_for_signature_issuer_audience_expiry_and_role(
    tmp_path,
):
    import time as clock

    import jwt

    good_key, good_jwk = _rsa_jwk("k1")
    other_key, _ = _rsa_jwk("k1")  # same kid, a key the provider never published
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [good_jwk]}))
    extra = f"""oidc_issuer = "https://idp.example.com"
oidc_audience = "helios"
oidc_jwks_file = "{jwks}"
oidc_name_claim = "email"
oidc_leeway_seconds = 5.0
"""
    secure = Secure(tmp_path, extra)
    server = secure.server
    await secure.start()
    now = int(clock.time())
    base = {
        "iss": "https://idp.example.com",
        "aud": "helios",
        "sub": "u-1",
        "email": "olga@example.com",
        "helios_role": "operator",
        "iat": now,
        "exp": now + 300,
    }

    def token(key=good_key, alg="RS256", **changes):
        claims = {**base, **changes}
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": "k1"})

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            control = pb_grpc.ControlServiceStub(channel)
            reply = await control.TriggerAction(
                pb.TriggerActionRequest(action="notify", target="aws", dry_run=True),
                metadata=bearer(token()),
            )
            assert reply.decision.decided_by == "olga@example.com"
            refused = {
                "expired": token(exp=now - 60, iat=now - 400),
                "another audience": token(aud="someone-else"),
                "another issuer": token(iss="https://evil.example.com"),
                "Signature verification failed": token(key=other_key),
                "no HELIOS role": token(helios_role=None),
                "algorithm 'HS256'": jwt.encode(base, "secret", algorithm="HS256"),
                "algorithm 'none'": jwt.encode(base, None, algorithm="none"),
            }
            for why, bad in refused.items():
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await control.SetBreaker(
                        pb.SetBreakerRequest(source="aws", state="open"), metadata=bearer(bad)
                    )
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, why
                assert why in caught.value.details(), (why, caught.value.details())
            viewer = token(helios_role="viewer")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await control.SetBreaker(
                    pb.SetBreakerRequest(source="aws", state="open"), metadata=bearer(viewer)
                )
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            within_skew = token(exp=now - 2, iat=now - 300)  # 2 s late, 5 s leeway
            await pb_grpc.QueryServiceStub(channel).GetStats(
                pb.GetStatsRequest(), metadata=bearer(within_skew)
            )
    finally:
        await secure.stop()


async def test_a_damaged_key_file_keeps_the_last_keys_and_answers_no_unknown(tmp_path, caplog):
    async with Secure(tmp_path) as s, s.channel() as channel:
        viewer = s.key("viewer", "vi")
        query = pb_grpc.QueryServiceStub(channel)
        await query.GetStats(pb.GetStatsRequest(), metadata=bearer(viewer))
        (tmp_path / "data" / "keys.json").write_text("{torn")
        s.keys.refresh(force=True)
        await query.GetStats(pb.GetStatsRequest(), metadata=bearer(viewer))  # still known
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await query.GetStats(pb.GetStatsRequest(), metadata=bearer("helios_1234abcd_x"))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "is not a HELIOS key file" in caplog.text
