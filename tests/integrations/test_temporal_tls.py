"""mTLS to Temporal, for real. The dev server (`temporal server start-dev`, CLI 1.9) has no TLS
flags, so a TLS-terminating proxy written with the standard library (asyncio + ssl, ALPN "h2":
gRPC is HTTP/2 over TLS) stands in front of the session's dev server and demands a client
certificate signed by a CA made here, for this test. A worker with that certificate connects and
runs a workflow; one without it, or with a certificate of another CA, is refused."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

import worker as worker_module
from api.main import create_app
from config import Settings
from domain.policy import PaymentPolicy
from integrations.factory import Integrations
from integrations.temporal import connect
from tests.support import add_patient, add_visit, free_port
from workflows import contracts as c
from workflows.visit import VisitWorkflow

SERVER_NAME = "temporal.hospital.test"  # the name on the server's certificate (not the address's host)


@dataclass
class Issued:
    cert: Path
    key: Path


class Authority:
    """A throwaway CA that issues server and client certificates into `folder`."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            self._builder(subject, self.key.public_key())
            .issuer_name(subject)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = folder / f"{name}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _builder(subject: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        now = datetime.now(UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
        )

    def issue(self, name: str, *, server: bool) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key.public_key())
        builder = builder.issuer_name(self.cert.subject).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        if server:
            names = [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        issued = Issued(cert=self.folder / f"{self.name}-{name}.pem", key=self.folder / f"{self.name}-{name}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return issued


@asynccontextmanager
async def tls_proxy(upstream: str, server: Issued, client_ca: Path) -> AsyncIterator[int]:
    """TLS on a free port, client certificates of `client_ca` required, bytes forwarded to the
    plain `upstream` (host:port); yields the port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server.cert, server.key)
    context.load_verify_locations(client_ca)
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])
    host, port = upstream.rsplit(":", 1)
    handlers: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            writer.close()
            handlers.discard(task)

    listen = free_port()
    proxy = await asyncio.start_server(handle, "127.0.0.1", listen, ssl=context)
    try:
        yield listen
    finally:
        proxy.close()
        for task in list(handlers):
            task.cancel()
        for task in list(handlers):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await proxy.wait_closed()


@pytest.fixture
async def cluster(temporal_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[tuple[int, Authority, Issued]]:
    """The session's dev server behind mTLS: (the proxy's port, the CA, a client certificate)."""
    ca = Authority(tmp_path, "hospital-ca")
    server = ca.issue(SERVER_NAME, server=True)
    client = ca.issue("yihoufu-worker", server=False)
    upstream = temporal_env.client.service_client.config.target_host
    async with tls_proxy(upstream, server, ca.path) as port:
        yield port, ca, client


def over_tls(settings: Settings, port: int, ca: Path, client: Issued | None) -> Settings:
    """The test's settings with these TLS settings, which pass the validation the environment's
    would (the files are readable, cert and key together)."""
    tls: dict[str, Any] = {
        "temporal_address": f"127.0.0.1:{port}",
        "temporal_tls_ca": str(ca),
        "temporal_tls_server_name": SERVER_NAME,
        "temporal_tls_cert": str(client.cert) if client else "",
        "temporal_tls_key": str(client.key) if client else "",
    }
    Settings(sandbox=True, **tls)
    return settings.model_copy(update=tls)


async def test_a_worker_with_the_client_certificate_connects_and_runs_a_workflow(
    cluster: tuple[int, Authority, Issued],
    settings: Settings,
    factory: async_sessionmaker[AsyncSession],
    integrations: Integrations,
) -> None:
    port, ca, issued = cluster
    tls = over_tls(settings, port, ca.path, issued)
    client = await connect(tls)
    patient_id = await add_patient(factory)
    visit_id = await add_visit(factory, patient_id)
    async with AsyncExitStack() as stack:
        async with worker_module.create_worker(client, tls, factory, stack, integrations=integrations):
            handle = await client.start_workflow(
                VisitWorkflow.run,
                c.VisitInput(
                    visit_id=visit_id, patient_id=patient_id, registration_fee_fen=500, policy=PaymentPolicy()
                ),
                id=c.workflow_id(visit_id),
                task_queue=tls.task_queue,
            )
            for _ in range(100):  # the registration fee booked by the worker's activity, over mTLS
                if (await handle.query(VisitWorkflow.state)).balance_fen == 500:
                    break
                await asyncio.sleep(0.1)
            state = await handle.query(VisitWorkflow.state)
            assert state.balance_fen == 500 and state.stage == "registered"
            await handle.terminate("test over")


async def test_without_the_client_certificate_the_worker_is_refused(
    cluster: tuple[int, Authority, Issued], settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port, ca, _ = cluster
    with pytest.raises(RuntimeError, match="Failed client connect"):
        await connect(over_tls(settings, port, ca.path, None))
    stranger = Authority(tmp_path, "another-ca").issue("intruder", server=False)
    with pytest.raises(RuntimeError, match="Failed client connect"):
        await connect(over_tls(settings, port, ca.path, stranger))
    # the worker's own loop keeps trying (the cluster may be restarting) and never gets a client
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(2.0, stop.set)
    assert await worker_module.connect(over_tls(settings, port, ca.path, None), stop) is None
    assert "not reachable" in caplog.text


async def test_a_server_certificate_of_an_unknown_ca_is_refused(
    cluster: tuple[int, Authority, Issued], settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port, _, issued = cluster
    other = Authority(tmp_path, "not-the-servers-ca")
    with pytest.raises(RuntimeError, match="Failed client connect"):
        await connect(over_tls(settings, port, other.path, issued))
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(1.0, stop.set)
    assert await worker_module.connect(over_tls(settings, port, other.path, issued), stop) is None
    assert "UnknownIssuer" in caplog.text  # the worker's log says why


async def test_the_api_connects_the_same_way(
    cluster: tuple[int, Authority, Issued], settings: Settings, integrations: Integrations
) -> None:
    """The API's lazy client (api/main.py) over mTLS: /healthz reaches Temporal with the client
    certificate, and says it cannot without it."""
    port, ca, issued = cluster
    for client, status in ((issued, 200), (None, 503)):
        app = create_app(over_tls(settings, port, ca.path, client), integrations=integrations)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
                r = await http.get("/healthz")
        assert r.status_code == status, r.text
        assert (r.json()["temporal"] == "ok") is (status == 200)
