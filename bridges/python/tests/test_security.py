"""TLS to the router and registration headers (the router's authorize hook,
``--register-token`` on the example router)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Tuple

import grpc
import grpc.aio
import pytest
from harness import TIMEOUT, HookedGreeter, run
from myservice.v1 import myservice_pb2 as pb
from myservice.v1 import myservice_pb2_grpc as pb_grpc
from myservice.v1 import myservice_router_bridge

from grpc_router_bridge import Bridge, BridgeOptions, TlsOptions


def self_signed(directory: Path) -> Tuple[Path, Path]:
    """A certificate for ``localhost`` and its key, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


def bridge(endpoint: str, **options: object) -> Bridge:
    return Bridge(
        myservice_router_bridge.GREETER,
        pb_grpc.add_GreeterServicer_to_server,
        HookedGreeter("py-secure"),
        BridgeOptions([endpoint], instance_id="py-secure", **options),  # type: ignore[arg-type]
    )


def test_the_bridge_registers_over_tls_and_clients_reach_it(fleet, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    router = fleet.router(tls=(cert, key))
    pem = cert.read_bytes()

    async def scenario() -> None:
        instance = bridge(
            f"https://{router.registrations}", tls=TlsOptions(root_certificates=pem, server_name="localhost")
        )
        await instance.start()
        try:
            await instance.registered(timeout=TIMEOUT)
            # The compiled router serves clients over TLS too; the daemon's
            # clients' listener has no TLS in this config.
            channel = (
                grpc.aio.secure_channel(
                    router.clients,
                    grpc.ssl_channel_credentials(pem),
                    options=[("grpc.ssl_target_name_override", "localhost")],
                )
                if router.kind == "compiled"
                else grpc.aio.insecure_channel(router.clients)
            )
            reply = await pb_grpc.GreeterStub(channel).SayHello(pb.HelloRequest(name="tls"), timeout=TIMEOUT)
            assert (reply.message, reply.instance_id) == ("Hello, tls!", "py-secure")
            await channel.close()
        finally:
            await instance.shutdown()

    run(scenario())


def test_a_bridge_that_does_not_trust_the_routers_certificate_does_not_register(fleet, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    router = fleet.router(tls=(cert, key))

    async def scenario() -> None:
        # The system roots do not include the self-signed certificate.
        instance = bridge(f"https://{router.registrations}", connect_timeout=1.0, reconnect_max=0.5, reconnect_initial=0.1)
        await instance.start()
        try:
            state = await instance.wait_for(lambda s: s.last_error is not None, TIMEOUT)
            assert state.registered == 0
        finally:
            await instance.abort()

    run(scenario())


def test_registration_headers_reach_the_routers_authorize_hook(fleet) -> None:
    router = fleet.router(register_token="s3cret")

    async def scenario() -> None:
        refused = bridge(f"http://{router.registrations}", register_metadata=[("authorization", "Bearer wrong")])
        await refused.start()
        try:
            state = await refused.wait_for(lambda s: s.last_error is not None, TIMEOUT)
            assert state.registered == 0
            assert "refused" in state.last_error and "token" in state.last_error
        finally:
            await refused.abort()

        accepted = bridge(f"http://{router.registrations}", register_metadata=[("authorization", "Bearer s3cret")])
        await accepted.start()
        try:
            await accepted.registered(timeout=TIMEOUT)
            channel = grpc.aio.insecure_channel(router.clients)
            reply = await pb_grpc.GreeterStub(channel).SayHello(pb.HelloRequest(name="auth"), timeout=TIMEOUT)
            assert reply.instance_id == "py-secure"
            await channel.close()
        finally:
            await accepted.shutdown()

    run(scenario())
