"""Interop test: Python grpcio calls the Rust router of myservice.v1.Greeter.

Run by .ci/interop.sh, which generates the Python stubs, starts the example
`router` and two `instance` binaries, and passes their addresses:

    python interop_test.py --router 127.0.0.1:PORT --direct 127.0.0.1:PORT \
        --stubs DIR --instances instance-a,instance-b

`--direct` is the same Greeter served without a router (the `direct`
binary): the `test_routed_*` checks make one call both ways and require the
same answer, or the same status code.

Every check is a function named `test_*`; each runs once and the run ends
with an `N passed, N failed` line. Exit status 0 only when all passed.
"""

import argparse
import sys
import traceback

TIMEOUT = 10.0  # seconds: the deadline of every call
SERVICE = "myservice.v1.Greeter"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--router", required=True, help="host:port of the router")
    parser.add_argument("--stubs", required=True, help="directory of the generated stubs")
    parser.add_argument("--instances", required=True, help="comma-separated instance ids")
    parser.add_argument("--direct", required=True, help="host:port of the Greeter without a router")
    return parser.parse_args()


ARGS = parse_args()
sys.path.insert(0, ARGS.stubs)

import grpc  # noqa: E402
from google.protobuf import empty_pb2  # noqa: E402
from myservice.v1 import myservice_pb2 as pb  # noqa: E402
from myservice.v1 import myservice_pb2_grpc as pb_grpc  # noqa: E402

INSTANCES = [i for i in ARGS.instances.split(",") if i]
CHANNEL = grpc.insecure_channel(ARGS.router)
STUB = pb_grpc.GreeterStub(CHANNEL)
DIRECT_CHANNEL = grpc.insecure_channel(ARGS.direct)
DIRECT = pb_grpc.GreeterStub(DIRECT_CHANNEL)


# --- grpc.health.v1, encoded by hand (no extra package needed) -------------

def _health_request(service):
    data = service.encode()
    assert len(data) < 128
    return b"\x0a" + bytes([len(data)]) + data


def _health_status(response):
    """The `status` (field 1, varint) of a HealthCheckResponse; 0 if absent."""
    if len(response) >= 2 and response[0] == 0x08:
        return response[1]
    return 0


SERVING = 1
IDENTITY = lambda b: b  # noqa: E731


def test_health_watch_reaches_serving():
    watch = CHANNEL.unary_stream(
        "/grpc.health.v1.Health/Watch",
        request_serializer=IDENTITY,
        response_deserializer=IDENTITY,
    )
    for response in watch(_health_request(SERVICE), timeout=TIMEOUT):
        if _health_status(response) == SERVING:
            return
    raise AssertionError("health watch ended before SERVING")


def test_health_check_is_serving():
    check = CHANNEL.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=IDENTITY,
        response_deserializer=IDENTITY,
    )
    status = _health_status(check(_health_request(SERVICE), timeout=TIMEOUT))
    assert status == SERVING, f"status {status}"


# --- the four method kinds --------------------------------------------------

def test_unary_say_hello():
    reply = STUB.SayHello(pb.HelloRequest(name="Ada"), timeout=TIMEOUT)
    assert reply.message == "Hello, Ada!", reply.message
    assert reply.instance_id in INSTANCES, reply.instance_id


def test_every_instance_reachable_by_pin():
    for instance in INSTANCES:
        reply = STUB.WhoAmI(
            empty_pb2.Empty(),
            timeout=TIMEOUT,
            metadata=[("x-router-instance", instance)],
        )
        assert reply.instance_id == instance, (instance, reply.instance_id)


def test_server_streaming():
    replies = list(
        STUB.StreamGreetings(pb.StreamRequest(name="Ada", count=5), timeout=TIMEOUT)
    )
    assert [r.message for r in replies] == [f"Hello #{i}, Ada!" for i in range(5)], replies
    assert len({r.instance_id for r in replies}) == 1


def test_client_streaming():
    reply = STUB.Sum((pb.Number(value=v) for v in range(1, 11)), timeout=TIMEOUT)
    assert (reply.total, reply.count) == (55, 10), reply
    assert reply.instance_id in INSTANCES, reply.instance_id


def test_bidi_streaming():
    texts = ["hi", "how are you?", "bye"]
    messages = (pb.ChatMessage(text=t, seq=i) for i, t in enumerate(texts, 1))
    echoes = list(STUB.Chat(messages, timeout=TIMEOUT))
    assert [e.seq for e in echoes] == [1, 2, 3], echoes
    for echo, text in zip(echoes, texts):
        assert echo.text.startswith(text + " (from "), echo.text


def test_large_message_round_trip():
    payload = bytes(range(256)) * (3 * 1024 * 4)  # 3 MiB, chunked on the way
    reply = STUB.SayHello(pb.HelloRequest(name="big", payload=payload), timeout=TIMEOUT)
    assert reply.payload == payload, len(reply.payload)


def test_gzip_request():
    reply = STUB.SayHello(
        pb.HelloRequest(name="zip", payload=b"z" * 100_000),
        timeout=TIMEOUT,
        compression=grpc.Compression.Gzip,
    )
    assert reply.message == "Hello, zip!" and len(reply.payload) == 100_000


# --- routed against direct: compression and message sizes -------------------

def _both(call, *, channel_options=None):
    """Runs `call(stub)` routed and direct; returns both outcomes, each the
    result or ("error", status code)."""
    outcomes = []
    for target in (ARGS.router, ARGS.direct):
        with grpc.insecure_channel(target, options=channel_options or []) as channel:
            try:
                outcomes.append(call(pb_grpc.GreeterStub(channel)))
            except grpc.RpcError as error:
                outcomes.append(("error", error.code()))
    return outcomes


def _compressed_echo(compression):
    payload = bytes(range(256)) * 800  # 200 KiB, compressible, chunked routed
    routed, direct = _both(
        lambda stub: stub.SayHello(
            pb.HelloRequest(name="zip", payload=payload),
            timeout=TIMEOUT,
            compression=compression,
        ).payload
    )
    assert routed == direct, (routed[:16], direct[:16])
    assert routed == payload, len(routed)


def test_routed_deflate_request_as_direct():
    _compressed_echo(grpc.Compression.Deflate)


def test_routed_gzip_request_as_direct():
    _compressed_echo(grpc.Compression.Gzip)


def test_routed_compressed_channel_as_direct():
    # A channel-wide default compression: every message of a stream compressed.
    outcomes = []
    for target in (ARGS.router, ARGS.direct):
        with grpc.insecure_channel(target, compression=grpc.Compression.Deflate) as channel:
            stub = pb_grpc.GreeterStub(channel)
            reply = stub.Sum((pb.Number(value=v) for v in range(100)), timeout=TIMEOUT)
            outcomes.append((reply.total, reply.count))
    assert outcomes[0] == outcomes[1] == (4950, 100), outcomes


def _streamed_payload_size(stub, size):
    replies = list(
        stub.StreamGreetings(
            pb.StreamRequest(name="big", count=1, payload_size=size), timeout=TIMEOUT
        )
    )
    return [len(r.payload) for r in replies]


def test_routed_large_response_as_direct():
    size = 3 * 1024 * 1024  # under grpcio's 4 MiB receive limit
    routed, direct = _both(lambda stub: _streamed_payload_size(stub, size))
    assert routed == direct == [size], (routed, direct)


def test_routed_response_over_the_client_limit_fails_as_direct():
    size = 5 * 1024 * 1024  # over grpcio's 4 MiB receive limit
    routed, direct = _both(lambda stub: _streamed_payload_size(stub, size))
    assert routed == direct, (routed, direct)
    assert direct == ("error", grpc.StatusCode.RESOURCE_EXHAUSTED), direct


def test_routed_response_within_a_raised_client_limit_as_direct():
    size = 5 * 1024 * 1024
    options = [("grpc.max_receive_message_length", 8 * 1024 * 1024)]
    routed, direct = _both(
        lambda stub: _streamed_payload_size(stub, size), channel_options=options
    )
    assert routed == direct == [size], (routed, direct)


# --- metadata ---------------------------------------------------------------

BINARY = bytes([0, 1, 2, 0xFE, 0xFF, 0x80, 10, 13])
ECHO_METADATA = [
    ("x-echo", "1"),
    ("x-trace-id", "abc-123"),
    ("x-blob-bin", BINARY),
    ("not-echoed", "because it lacks the x- prefix"),
]


def _check_echo(initial_metadata):
    got = {}
    for key, value in initial_metadata:
        got.setdefault(key, []).append(value)
    assert got.get("x-echo") == ["1"], got
    assert got.get("x-trace-id") == ["abc-123"], got
    assert got.get("x-blob-bin") == [BINARY], got
    assert "not-echoed" not in got, got


def test_metadata_echo_unary_with_binary_value():
    reply, call = STUB.SayHello.with_call(
        pb.HelloRequest(name="meta"), timeout=TIMEOUT, metadata=ECHO_METADATA
    )
    assert reply.message == "Hello, meta!"
    _check_echo(call.initial_metadata())


def test_metadata_echo_bidi():
    call = STUB.Chat(
        iter([pb.ChatMessage(text="one", seq=1)]), timeout=TIMEOUT, metadata=ECHO_METADATA
    )
    _check_echo(call.initial_metadata())
    assert [m.seq for m in call] == [1]


def test_no_echo_without_header():
    _, call = STUB.SayHello.with_call(
        pb.HelloRequest(name="quiet"), timeout=TIMEOUT, metadata=[("x-trace-id", "t")]
    )
    keys = {key for key, _ in call.initial_metadata()}
    assert "x-trace-id" not in keys, keys


# --- statuses ---------------------------------------------------------------

def _expect_error(code, message, fn):
    try:
        fn()
    except grpc.RpcError as error:
        assert error.code() == code, (error.code(), error.details())
        if message is not None:
            assert error.details() == message, error.details()
        return error
    raise AssertionError(f"expected {code}, the call succeeded")


def test_unary_status_error():
    _expect_error(
        grpc.StatusCode.NOT_FOUND,
        "requested failure",
        lambda: STUB.SayHello(pb.HelloRequest(name="fail:5"), timeout=TIMEOUT),
    )


def test_every_status_code_survives():
    for code in grpc.StatusCode:
        if code in (grpc.StatusCode.OK,):
            continue
        number = code.value[0]
        _expect_error(
            code,
            "requested failure",
            lambda: STUB.SayHello(pb.HelloRequest(name=f"fail:{number}"), timeout=TIMEOUT),
        )


def test_server_streaming_status_error():
    _expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        "requested failure",
        lambda: list(STUB.StreamGreetings(pb.StreamRequest(name="fail:7", count=3), timeout=TIMEOUT)),
    )


def test_unknown_method_is_unimplemented():
    call = CHANNEL.unary_unary(
        f"/{SERVICE}/NoSuchMethod",
        request_serializer=IDENTITY,
        response_deserializer=IDENTITY,
    )
    _expect_error(grpc.StatusCode.UNIMPLEMENTED, None, lambda: call(b"", timeout=TIMEOUT))


def test_oversized_request_is_refused():
    payload = b"x" * (5 * 1024 * 1024)  # over the router's 4 MiB default
    try:
        STUB.SayHello(pb.HelloRequest(name="huge", payload=payload), timeout=TIMEOUT)
    except grpc.RpcError as error:
        # gRPC's code for a message over a limit (a tonic server itself says
        # OUT_OF_RANGE; the router answers as grpc-go and grpcio do).
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (error.code(), error.details())
        assert "max_message_size" in error.details(), error.details()
        return
    raise AssertionError("a 5 MiB request went through")


def main():
    tests = [(n, f) for n, f in globals().items() if n.startswith("test_") and callable(f)]
    passed = failed = 0
    for name, test in tests:
        try:
            test()
        except Exception:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc(file=sys.stdout)
        else:
            passed += 1
            print(f"ok   {name}")
    CHANNEL.close()
    DIRECT_CHANNEL.close()
    if not hasattr(grpc.Compression, "Zstd"):
        print("note: this grpcio has no zstd (grpc.Compression: NoCompression, Deflate, Gzip);"
              " zstd is covered by the Rust tests")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
