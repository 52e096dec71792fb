#!/usr/bin/env python3
"""A grpcio (Python, C core) client for the integration suite's echo service (tests/it/harness/
echo.rs): the four call kinds against ADDR, through Fulcrum. Messages are encoded by hand
(protobuf wire format), so nothing but grpcio is needed.

    grpc_client.py ADDR [--tls CA_PEM --name SERVER_NAME]

Prints one line per call kind, `kind ok ...`, and exits 1 on the first wrong answer.
"""

import argparse
import sys

import grpc


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_request(message="", payload=b"", count=0):
    out = bytearray()
    if message:
        data = message.encode()
        out += b"\x0a" + varint(len(data)) + data
    if payload:
        out += b"\x12" + varint(len(payload)) + payload
    if count:
        out += b"\x18" + varint(count)
    return bytes(out)


def decode_reply(data):
    """EchoReply { string message = 1; bytes payload = 2; string backend = 3; uint32 seq = 4; }"""
    reply = {"message": "", "payload": b"", "backend": "", "seq": 0}
    i = 0

    def read_varint():
        nonlocal i
        n, shift = 0, 0
        while True:
            b = data[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n

    while i < len(data):
        key = read_varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            value = read_varint()
        elif wire == 2:
            length = read_varint()
            value = data[i : i + length]
            i += length
        else:
            raise ValueError(f"unexpected wire type {wire}")
        if field == 1:
            reply["message"] = value.decode()
        elif field == 2:
            reply["payload"] = bytes(value)
        elif field == 3:
            reply["backend"] = value.decode()
        elif field == 4:
            reply["seq"] = value
    return reply


def check(ok, what):
    if not ok:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


def main():
    args = argparse.ArgumentParser()
    args.add_argument("addr")
    args.add_argument("--tls", help="CA certificate (PEM) to trust; TLS with ALPN h2")
    args.add_argument("--name", default="localhost", help="server name for TLS")
    a = args.parse_args()

    if a.tls:
        with open(a.tls, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        options = [("grpc.ssl_target_name_override", a.name)]
        channel = grpc.secure_channel(a.addr, creds, options=options)
    else:
        channel = grpc.insecure_channel(a.addr)
    grpc.channel_ready_future(channel).result(timeout=10)

    raw = dict(request_serializer=lambda b: b, response_deserializer=decode_reply)
    unary = channel.unary_unary("/echo.Echo/Unary", **raw)
    server_stream = channel.unary_stream("/echo.Echo/ServerStream", **raw)
    client_stream = channel.stream_unary("/echo.Echo/ClientStream", **raw)
    bidi = channel.stream_stream("/echo.Echo/Bidi", **raw)

    # Unary, with a payload larger than one HTTP/2 window.
    payload = bytes(range(256)) * 1024
    reply = unary(encode_request("hello", payload), timeout=10)
    check(reply["message"] == "hello" and reply["payload"] == payload, f"unary: {reply!r:.200}")
    print(f"unary ok backend={reply['backend']}", flush=True)

    replies = list(server_stream(encode_request("tick", count=5), timeout=10))
    seqs = [r["seq"] for r in replies]
    check(seqs == [0, 1, 2, 3, 4], f"server streaming: {seqs}")
    print(f"server_stream ok replies={len(replies)}", flush=True)

    parts = iter([encode_request(p) for p in ["a", "b", "c"]])
    reply = client_stream(parts, timeout=10)
    check(reply["message"] == "abc" and reply["seq"] == 3, f"client streaming: {reply}")
    print("client_stream ok", flush=True)

    words = ["one", "two", "three", "four"]
    got = [r["message"] for r in bidi(iter([encode_request(w) for w in words]), timeout=10)]
    check(got == words, f"bidi: {got}")
    print(f"bidi ok replies={len(got)}", flush=True)

    # A call to a method the backend does not have: its status comes back through Fulcrum.
    try:
        channel.unary_unary("/echo.Echo/Missing", **raw)(b"", timeout=10)
        check(False, "unknown method answered")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.UNIMPLEMENTED, f"unknown method: {e.code()}")
    print("status ok UNIMPLEMENTED", flush=True)
    channel.close()


if __name__ == "__main__":
    main()
