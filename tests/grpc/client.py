"""An independent gRPC client (Python grpcio) for patron's gRPC tests.

Usage: client.py ADDR SCENARIO [--key KEY] [--ca CA [--cert CERT --key-file KEY]]
                 [--traceparent TP]

Prints one JSON object per line, flushed, so the Rust test can follow a
long-running scenario (`watch`) as it goes.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "..", "..", "examples", "greeter-proto", "proto")


def stubs():
    out = tempfile.mkdtemp(prefix="greeter-py-")
    rc = protoc.main([
        "protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--grpc_python_out={out}",
        os.path.join(PROTO_DIR, "greeter.proto"),
    ])
    if rc != 0:
        raise SystemExit(f"protoc failed with {rc}")
    sys.path.insert(0, out)
    import greeter_pb2, greeter_pb2_grpc  # noqa: E402
    # Imported, the stubs live in memory: the directory is not needed, and
    # left behind it would outlive a client that is killed mid-scenario.
    sys.path.remove(out)
    shutil.rmtree(out, ignore_errors=True)
    return greeter_pb2, greeter_pb2_grpc


def emit(**fields):
    print(json.dumps(fields), flush=True)


def channel(args):
    if args.ca is None:
        return grpc.insecure_channel(args.addr)
    root = open(args.ca, "rb").read()
    cert = open(args.cert, "rb").read() if args.cert else None
    key = open(args.key_file, "rb").read() if args.key_file else None
    creds = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(args.addr, creds, options=[("grpc.ssl_target_name_override", "localhost")])


def code(err):
    return err.code().name


def calls(args, ch):
    pb, pbg = stubs()
    stub = pbg.GreeterStub(ch)
    md = [("authorization", f"Apikey {args.key}"), ("x-correlation-id", "py-corr-1")]
    if args.traceparent:
        md.append(("traceparent", args.traceparent))
    reply, call = stub.SayHello.with_call(pb.HelloRequest(name="Ada"), metadata=md, timeout=10)
    echoed = dict(call.initial_metadata()).get("x-correlation-id")
    emit(kind="unary", message=reply.message, correlation_id=reply.correlation_id, echoed=echoed)
    for name, metadata in [("no key", [("x-correlation-id", "py-nokey")]),
                           ("wrong key", [("authorization", "Apikey nope")])]:
        try:
            stub.SayHello(pb.HelloRequest(name="Ada"), metadata=metadata, timeout=10)
            emit(kind="auth", case=name, code="OK")
        except grpc.RpcError as e:
            emit(kind="auth", case=name, code=code(e))
    try:
        stub.SayHello(pb.HelloRequest(name=" "), metadata=md, timeout=10)
        emit(kind="invalid", code="OK")
    except grpc.RpcError as e:
        emit(kind="invalid", code=code(e), details=e.details())
    ticks = [t.remaining for t in stub.Countdown(pb.CountdownRequest(**{"from": 3, "interval_ms": 10}), metadata=md, timeout=10)]
    emit(kind="server_stream", ticks=ticks)
    total = stub.Total(iter([pb.Number(value=v) for v in (1, 2, 39)]), metadata=md, timeout=10)
    emit(kind="client_stream", total=total.total, count=total.count)
    replies = [r.message for r in stub.Chat(iter([pb.HelloRequest(name=n) for n in ("Ada", "Grace")]), metadata=md, timeout=10)]
    emit(kind="bidi", replies=replies)
    got = []
    try:
        for t in stub.Countdown(pb.CountdownRequest(**{"from": 50, "interval_ms": 100}), metadata=md, timeout=0.35):
            got.append(t.remaining)
        emit(kind="deadline", code="OK", ticks=got)
    except grpc.RpcError as e:
        emit(kind="deadline", code=code(e), ticks=got)
    health = health_pb2_grpc.HealthStub(ch)
    for service in ("", "greeter.v1.Greeter"):
        r = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        emit(kind="health", service=service, status=health_pb2.HealthCheckResponse.ServingStatus.Name(r.status))
    try:
        health.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=10)
        emit(kind="health_unknown", code="OK")
    except grpc.RpcError as e:
        emit(kind="health_unknown", code=code(e))


def reflection(args, ch):
    # The v1 service first; grpcio-reflection's client stubs speak v1alpha,
    # so the request goes to v1 by method path with v1alpha's messages
    # (the two are wire-compatible).
    method = ch.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    try:
        responses = method(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        names = sorted(s.name for r in responses for s in r.list_services_response.service)
        emit(kind="reflection", services=names)
    except grpc.RpcError as e:
        emit(kind="reflection", code=code(e))


def watch(args, ch):
    health = health_pb2_grpc.HealthStub(ch)
    try:
        for r in health.Watch(health_pb2.HealthCheckRequest(service="greeter.v1.Greeter")):
            emit(kind="watch", status=health_pb2.HealthCheckResponse.ServingStatus.Name(r.status))
        emit(kind="watch_end", code="OK")
    except grpc.RpcError as e:
        emit(kind="watch_end", code=code(e))


def unary(args, ch):
    pb, pbg = stubs()
    stub = pbg.GreeterStub(ch)
    try:
        reply = stub.SayHello(pb.HelloRequest(name="TLS"), metadata=[("authorization", f"Apikey {args.key}")], timeout=10)
        emit(kind="unary", code="OK", message=reply.message)
    except grpc.RpcError as e:
        emit(kind="unary", code=code(e), details=e.details())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("addr")
    p.add_argument("scenario", choices=["calls", "reflection", "watch", "unary"])
    p.add_argument("--key", default="demo-key")
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key-file")
    p.add_argument("--traceparent")
    args = p.parse_args()
    ch = channel(args)
    {"calls": calls, "reflection": reflection, "watch": watch, "unary": unary}[args.scenario](args, ch)


if __name__ == "__main__":
    main()
