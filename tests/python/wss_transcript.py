"""A WebSocket client of the JSON gateway over TLS (wss://), stdlib only.

    python3 wss_transcript.py HOST PORT CA CERT KEY

Opens /v3/watch over TLS (HTTP/1.1, client certificate), creates a watch,
puts a key over https, and prints, one line each, what the server answered:
the handshake's status and WebSocket headers, the watch's created message,
the put's status, the event, the pong to a ping and the echoed close.
tests/tests/gateway.rs runs it against etcd and ferrokv and compares.
"""

import base64
import http.client
import os
import socket
import ssl
import struct
import sys

TIMEOUT = 10


def context(ca, cert, key):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def send_frame(sock, opcode, payload):
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    mask = os.urandom(4)
    sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def read_exact(f, n):
    data = f.read(n)
    if data is None or len(data) < n:
        raise EOFError
    return data


def recv_frame(f):
    try:
        b0, b1 = read_exact(f, 2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", read_exact(f, 2))
        elif n == 127:
            (n,) = struct.unpack(">Q", read_exact(f, 8))
        payload = read_exact(f, n)
    except EOFError:
        return "eof"
    opcode = b0 & 0x0F
    if opcode == 1:
        return "text " + payload.decode("utf-8", "replace")
    if opcode == 8:
        if len(payload) >= 2:
            (code,) = struct.unpack(">H", payload[:2])
            return "close %d %s" % (code, payload[2:].decode("utf-8", "replace"))
        return "close"
    if opcode == 10:
        return "pong " + payload.decode("utf-8", "replace")
    return "opcode %d" % opcode


def main():
    host, port, ca, cert, key = sys.argv[1:6]
    port = int(port)
    ctx = context(ca, cert, key)
    raw = socket.create_connection((host, port), timeout=TIMEOUT)
    sock = ctx.wrap_socket(raw, server_hostname=host)
    print("alpn", sock.selected_alpn_protocol())
    nonce = base64.b64encode(b"ferrokv wss test").decode()
    sock.sendall(
        (
            "GET /v3/watch HTTP/1.1\r\nHost: %s:%d\r\nConnection: Upgrade\r\n"
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: %s\r\n\r\n" % (host, port, nonce)
        ).encode()
    )
    f = sock.makefile("rb")
    status = f.readline().decode().strip()
    headers = {}
    while True:
        line = f.readline().decode().strip()
        if not line:
            break
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    print("handshake", status)
    for name in ("upgrade", "connection", "sec-websocket-accept"):
        print(" ", name, headers.get(name))
    send_frame(sock, 1, b'{"create_request":{"key":"d3Nz","prev_kv":true}}')
    print("created", recv_frame(f))
    put = http.client.HTTPSConnection(host, port, context=context(ca, cert, key), timeout=TIMEOUT)
    put.request("POST", "/v3/kv/put", body='{"key":"d3Nz","value":"MQ=="}')
    answer = put.getresponse()
    answer.read()
    print("put", answer.status)
    print("event", recv_frame(f))
    send_frame(sock, 9, b"hi")
    print("ping", recv_frame(f))
    send_frame(sock, 8, struct.pack(">H", 1000) + b"bye")
    print("close", recv_frame(f))


if __name__ == "__main__":
    main()
