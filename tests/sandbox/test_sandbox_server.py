"""HTTP plumbing: loopback-only binding, keep-alive, concurrency, framing errors, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable

import httpx
import pytest
from sbx_helpers import bearer, chat, user_message

from saga_magic.sandbox import RecordedRequest, Sandbox
from saga_magic.sandbox import chat as chat_module
from saga_magic.sandbox import server as server_module
from saga_magic.sandbox.server import HttpServer, Reply, Request, check_loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "example.com", "", "::", "192.168.0.1"])
def test_non_loopback_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match="loopback only"):
        Sandbox(host=host)


def test_loopback_hosts() -> None:
    assert check_loopback("localhost") == "127.0.0.1"
    assert check_loopback("127.0.0.2") == "127.0.0.2"
    assert check_loopback("[::1]") == "::1"
    with Sandbox(host="localhost") as sb:
        assert sb.base_url.startswith("http://127.0.0.1:")


def test_ipv6_loopback(client: httpx.Client) -> None:
    try:
        sb = Sandbox(host="::1").start()
    except OSError:  # pragma: no cover - host without IPv6
        pytest.skip("no IPv6 loopback")
    try:
        assert sb.base_url.startswith("http://[::1]:")
        assert client.get(f"{sb.base_url}/_sandbox/stats").status_code == 200
    finally:
        sb.stop()


def _is_running(sb: Sandbox) -> bool:
    return sb.running


def test_lifecycle_errors() -> None:
    sb = Sandbox()
    with pytest.raises(RuntimeError, match="not started"):
        _ = sb.base_url
    sb.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            sb.start()
        assert sb.running
        assert sb.port > 0
        port = sb.port
        with pytest.raises(OSError, match="address already in use"):
            Sandbox(port=port).start()
    finally:
        sb.stop()
        sb.stop()  # idempotent
    assert not _is_running(sb)  # (a function: mypy keeps property narrowing across calls)
    with sb:  # restartable
        assert _is_running(sb)


def test_keep_alive_reuses_the_connection(sandbox: Sandbox, client: httpx.Client) -> None:
    ports = set()
    for _ in range(5):
        response = chat(client, sandbox)
        stream = response.extensions["network_stream"]
        ports.add(stream.get_extra_info("client_addr")[1])
    assert len(ports) == 1


async def test_many_concurrent_requests(sandbox: Sandbox) -> None:
    auth = bearer(sandbox)
    seed = str(sandbox.issue_tokens()["refresh_token"])
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(limits=limits, timeout=10.0, verify=False) as aclient:

        async def one(i: int) -> int:
            if i % 3 == 0:
                form = {
                    "client_id": sandbox.client_id,
                    "grant_type": "refresh_token",
                    "refresh_token": seed,
                }
                response = await aclient.post(sandbox.token_endpoint, data=form)
            else:
                body = user_message(f"request {i}", stream=i % 2 == 0)
                response = await aclient.post(sandbox.chat_endpoint, json=body, headers=auth)
            return response.status_code

        statuses = await asyncio.gather(*(one(i) for i in range(150)))
    assert statuses == [200] * 150
    assert sandbox.post_count("token") == 50
    assert sandbox.post_count("chat") == 100
    assert len({r.seq for r in sandbox.requests()}) == 150


def _raw(sb: Sandbox, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", sb.port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_malformed_request(sandbox: Sandbox) -> None:
    answer = _raw(sandbox, b"THIS IS NOT HTTP\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in answer.lower()


def test_oversized_bodies(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    declared = _raw(
        sandbox,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n",
    )
    assert declared.startswith(b"HTTP/1.1 413 ")
    monkeypatch.setattr(server_module, "MAX_BODY", 10)
    chunked = _raw(
        sandbox,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"14\r\n01234567890123456789\r\n0\r\n\r\n",
    )
    assert chunked.startswith(b"HTTP/1.1 413 ")


def test_head_request(sandbox: Sandbox, client: httpx.Client) -> None:
    url = f"{sandbox.base_url}/{sandbox.tenant_id}/v2.0/.well-known/openid-configuration"
    response = client.head(url)
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(client.get(url).content)
    assert response.content == b""
    refused = client.head(f"{sandbox.base_url}/_sandbox/stats")
    assert refused.status_code == 405
    assert refused.content == b""


def _serve(handler: object) -> HttpServer:
    server = HttpServer(handler, host="127.0.0.1", port=0)  # type: ignore[arg-type]
    server.start()
    return server


def test_handler_errors_and_odd_statuses(client: httpx.Client) -> None:
    def handler(request: Request) -> Reply:
        if request.path == "/boom":
            raise RuntimeError("boom")
        if request.path == "/odd":
            return Reply(599, body=b"odd")
        return Reply(99)  # h11 refuses to send it: the connection is dropped

    server = _serve(handler)
    try:
        base = f"http://127.0.0.1:{server.port}"
        boom = client.get(f"{base}/boom")
        assert boom.status_code == 500
        assert boom.text == "sandbox internal error"
        odd = client.get(f"{base}/odd")
        assert odd.status_code == 599
        assert odd.text == "odd"
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(f"{base}/bad")
        with pytest.raises(RuntimeError, match="already started"):
            server.start()
    finally:
        server.stop()
    server.stop()


def test_stop_closes_stalled_streams(client: httpx.Client) -> None:
    sb = Sandbox().start()
    sb.script("chat", ["stall_stream:0"])
    with client.stream(
        "POST", sb.chat_endpoint, json=user_message(stream=True), headers=bearer(sb)
    ) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        started = time.monotonic()
        sb.stop()
        assert time.monotonic() - started < 2
        with pytest.raises(httpx.RemoteProtocolError):
            list(lines)


def test_client_gone_during_slow_answer(sandbox: Sandbox, client: httpx.Client) -> None:
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"x-sandbox-scenario: slow_body:0.3\r\n\r\n{}"
    )
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=5) as sock:
        sock.sendall(request)
        assert sock.recv(12) == b"HTTP/1.1 401"
    time.sleep(0.4)  # the server keeps writing into a closed socket, then gives up quietly
    assert chat(client, sandbox).status_code == 200


def test_connection_close_request(sandbox: Sandbox) -> None:
    answer = _raw(
        sandbox,
        b"GET /_sandbox/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200 ")


def test_stall_ignores_client_bytes_until_eof(sandbox: Sandbox) -> None:
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}'
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        "x-sandbox-scenario: stall_stream:0\r\n"
        f"api-key: {sandbox.api_key}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=5) as sock:
        sock.sendall(head + body)
        received = b""
        while b'"role"' not in received:
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200")
        sock.sendall(b"more bytes while the server stalls")
        time.sleep(0.05)  # the server reads and ignores them
    time.sleep(0.05)
    assert sandbox.requests("chat")[-1].outcome == "stall_stream:k=0"


def test_handler_failure_is_logged_as_500(
    sandbox: Sandbox, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 12: an exception in a handler is answered 500 and logged as such."""

    def boom(self: object, outcome: object) -> Reply:
        raise RuntimeError("boom")

    monkeypatch.setattr(chat_module._Chat, "run", boom)
    response = chat(client, sandbox)
    assert response.status_code == 500
    assert response.text == "sandbox internal error"
    logged = sandbox.requests("chat")[-1]
    assert (logged.status, logged.error) == (500, "RuntimeError: boom")
    monkeypatch.undo()
    assert chat(client, sandbox).status_code == 200
    assert sandbox.requests("chat")[-1].error is None


def _wait_for(sb: Sandbox, check: Callable[[RecordedRequest], bool]) -> RecordedRequest:
    deadline = time.monotonic() + 3
    while True:
        logged = sb.requests()[-1]
        if check(logged) or time.monotonic() > deadline:
            return logged
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("entry", "status", "delivery"),
    [
        ("ok", 200, "complete"),
        ("slow_headers:0.01", 200, "complete"),
        ("reset", None, "reset"),
        ("reset_mid_body", 200, "reset_mid_body"),
        ("reset_mid_stream", 200, "reset_mid_body"),
        ("stall_stream:0", 200, "stalled"),
    ],
)
def test_delivery_is_logged(
    sandbox: Sandbox, client: httpx.Client, entry: str, status: int | None, delivery: str
) -> None:
    """Finding 13: transport faults are told apart in the log."""
    sandbox.script("chat", [entry])
    with contextlib.suppress(httpx.TransportError):
        chat(client, sandbox, timeout=httpx.Timeout(5.0, read=0.2))
    logged = sandbox.requests("chat")[-1]
    assert (logged.status, logged.delivery) == (status, delivery)
    assert logged.to_dict()["delivery"] == delivery


def test_client_gone_during_slow_headers(sandbox: Sandbox, client: httpx.Client) -> None:
    """Finding 13: a client that timed out before the status line got no status."""
    sandbox.script("chat", ["slow_headers:2"])
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        chat(client, sandbox, timeout=httpx.Timeout(5.0, read=0.1))
    logged = _wait_for(sandbox, lambda r: r.delivery == "client_gone")
    assert (logged.status, logged.delivery) == (None, "client_gone")
    assert time.monotonic() - started < 1.5  # the server gave up early
    assert chat(client, sandbox).status_code == 200


def test_client_gone_during_a_trickle(sandbox: Sandbox) -> None:
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"x-sandbox-scenario: slow_body:2\r\n\r\n{}"
    )
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=5) as sock:
        sock.sendall(request)
        assert sock.recv(12) == b"HTTP/1.1 401"
        sock.shutdown(socket.SHUT_WR)  # the server sees the end of the stream, no reset
        time.sleep(0.1)
    logged = _wait_for(sandbox, lambda r: r.delivery == "client_gone")
    assert (logged.status, logged.delivery) == (401, "client_gone")


def test_client_gone_between_stream_chunks(client: httpx.Client) -> None:
    with Sandbox(stream_chunk_delay=0.2) as sb:
        with client.stream(
            "POST", sb.chat_endpoint, json=user_message(stream=True), headers=bearer(sb)
        ) as response:
            assert next(response.iter_lines()).startswith("data: ")
        logged = _wait_for(sb, lambda r: r.delivery == "client_gone")
        assert (logged.status, logged.delivery) == (200, "client_gone")


def test_write_failure_is_client_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    gone: list[bool] = []

    async def broken(*args: object) -> bool:
        raise ConnectionResetError

    def handler(request: Request) -> Reply:
        return Reply(200, body=b"x", on_client_gone=gone.append)

    server = _serve(handler)
    monkeypatch.setattr(server, "_deliver", broken)
    try:
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{server.port}/")
    finally:
        server.stop()
    assert gone == [True]


def test_plain_replies_survive_a_departed_client(client: httpx.Client) -> None:
    def handler(request: Request) -> Reply:
        return Reply(200, body=b"late", head_delay=1.0)  # nobody to tell

    server = _serve(handler)
    try:
        with pytest.raises(httpx.ReadTimeout):
            client.get(f"http://127.0.0.1:{server.port}/", timeout=httpx.Timeout(5.0, read=0.05))
        assert client.get(f"http://127.0.0.1:{server.port}/", timeout=5.0).text == "late"
    finally:
        server.stop()
