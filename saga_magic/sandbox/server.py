"""HTTP/1.1 plumbing: an asyncio server driving h11, in a background thread with its own loop.

Handlers are synchronous functions ``Request -> Reply``. A :class:`Reply` describes not only the
status, headers and body but also how to deliver them, which is where transport faults live:
a delay before the head, a body trickled over some seconds, a pause between chunks, and an ending
(complete, close, TCP reset, or stall with the connection held open).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import ipaddress
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import cast
from urllib.parse import parse_qsl, urlsplit

import h11

__all__ = ["Ending", "HttpServer", "Reply", "Request", "check_loopback"]

_log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024 * 1024
"""Largest request body accepted (bytes); larger bodies get 413."""
_READ_SIZE = 65536
_RESET_GRACE = 0.01
_MIN_SLEEP = 0.001
_WATCH = 0.01
"""Seconds between checks for a departed client during a delay."""


class Ending(Enum):
    """How a response ends."""

    COMPLETE = "complete"
    """Complete message; the connection stays open for keep-alive."""
    CLOSE = "close"
    """Complete message, then the server closes the connection."""
    RESET = "reset"
    """Stop after the bytes written so far and abort with a TCP reset."""
    STALL = "stall"
    """Stop writing and hold the connection open until the client leaves."""


@dataclass
class Request:
    """A complete HTTP request as handlers see it."""

    method: str
    """Upper-case method."""
    path: str
    """Path without the query string."""
    query: dict[str, str]
    """Query parameters (last value wins)."""
    headers: dict[str, str]
    """Headers with lower-case names; repeated headers joined with ``", "``."""
    body: bytes
    """The request body."""
    arrived: float = field(default_factory=time.time)
    """Wall-clock arrival time."""


@dataclass
class Reply:
    """A response plus delivery instructions."""

    status: int
    """HTTP status code."""
    headers: list[tuple[str, str]] = field(default_factory=list)
    """Headers (``content-length`` is added for non-chunked bodies)."""
    body: bytes = b""
    """Body of a non-chunked response."""
    parts: list[bytes] | None = None
    """Chunks of a chunked (streaming) response; ``None`` for a content-length body."""
    head_delay: float = 0.0
    """Seconds to wait before the status line."""
    part_delay: float = 0.0
    """Seconds to wait between chunks."""
    trickle: float = 0.0
    """Spread the body bytes one by one over this many seconds."""
    cut: float | None = None
    """Send only this fraction of the body bytes (with ``Ending.RESET``)."""
    send_head: bool = True
    """``False`` ends the connection before any response byte."""
    ending: Ending = Ending.COMPLETE
    """How the response ends."""
    on_client_gone: Callable[[bool], None] | None = None
    """Called (with whether the status line was sent) when the client leaves before the answer
    is complete: during ``head_delay``, or when a write fails."""


def check_loopback(host: str) -> str:
    """Return the address to bind for a host, refusing anything but loopback.

    ``localhost`` binds ``127.0.0.1`` (one address, one port).

    Raises:
        ValueError: the host is not a loopback address.
    """
    if host.lower() == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ValueError(
            f"refusing to bind {host!r}: the sandbox listens on loopback only "
            "(127.0.0.0/8, ::1, localhost)"
        )
    return str(address)


async def _pause(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Sleep for ``seconds``, watching the client; return ``False`` as soon as it has left.

    Nothing is read (a pipelined request stays buffered), so a client that left is seen once its
    end of stream arrives and nothing unread is buffered before it. A client that only shuts down
    its sending side counts as gone (HTTP/1.1 clients do not half-close while they wait).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not reader.at_eof():
        remaining = deadline - loop.time()
        if remaining <= 0:
            return True
        await asyncio.sleep(min(remaining, _WATCH))
    return False


def _split_target(target: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(target)
    return parts.path or "/", dict(parse_qsl(parts.query, keep_blank_values=True))


def _plain(status: int, text: str) -> Reply:
    return Reply(
        status,
        [("content-type", "text/plain; charset=utf-8")],
        text.encode("utf-8"),
        ending=Ending.CLOSE,
    )


class HttpServer:
    """An HTTP/1.1 server on a loopback address, served from a daemon thread.

    Args:
        handler: Called (in the server thread) with each complete request.
        host: Loopback host to bind.
        port: Port to bind; ``0`` picks a free one.
        clock: Wall clock for the ``Date`` header.
    """

    def __init__(
        self,
        handler: Callable[[Request], Reply],
        *,
        host: str,
        port: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._handler = handler
        self._clock = clock
        self._bind_host = check_loopback(host)
        self._port = port
        self._running: tuple[threading.Thread, asyncio.AbstractEventLoop] | None = None
        self._started = False
        self._stop = asyncio.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def host(self) -> str:
        """The bound address."""
        return self._bind_host

    @property
    def port(self) -> int:
        """The bound port (meaningful after :meth:`start`)."""
        return self._port

    @property
    def running(self) -> bool:
        """Whether the server thread is alive."""
        return self._running is not None and self._running[0].is_alive()

    def start(self, timeout: float = 10.0) -> None:
        """Bind and serve in a background thread; return once the socket listens.

        Raises:
            RuntimeError: already started (a server runs once).
            OSError: the bind failed (for example the port is taken).
        """
        if self._started:
            raise RuntimeError("server already started (a server runs once)")
        self._started = True
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._run, args=(loop,), name="saga-sandbox", daemon=True)
        thread.start()
        if not self._ready.wait(timeout):  # pragma: no cover - a wedged machine
            raise RuntimeError(f"the sandbox server did not start within {timeout} s")
        if self._error is not None:
            thread.join(timeout)
            raise self._error
        self._running = (thread, loop)

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listener and every connection, then join the thread (idempotent)."""
        running, self._running = self._running, None
        if running is None:
            return
        thread, loop = running
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(self._stop.set)
        thread.join(timeout)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to start()
            self._error = exc
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        server = await asyncio.start_server(
            self._on_connection, self._bind_host, self._port, backlog=1024
        )
        self._port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = cast("asyncio.Task[None]", asyncio.current_task())
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass  # client gone, or shutdown (a cancelled task upsets asyncio's stream callback)
        except Exception:
            _log.exception("sandbox: connection failed")
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            try:
                request = await self._read_request(conn, reader)
            except h11.RemoteProtocolError as exc:  # we have sent nothing for this request yet
                await self._send(conn, reader, writer, _plain(exc.error_status_hint, "bad request"))
                return
            if request is None:
                return
            if isinstance(request, Reply):
                await self._send(conn, reader, writer, request)
                return
            try:
                reply = self._handler(request)
            except Exception:
                _log.exception("sandbox handler failed for %s %s", request.method, request.path)
                reply = _plain(500, "sandbox internal error")
            if request.method == "HEAD":
                reply.trickle, reply.cut, reply.parts = 0.0, None, None
                reply.headers.append(("content-length", str(len(reply.body))))
                reply.body = b""
            if not await self._send(conn, reader, writer, reply):
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> Request | Reply | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(_READ_SIZE))
            elif isinstance(event, h11.Request):
                head = event
                length = dict(event.headers).get(b"content-length", b"0")
                if length.isdigit() and int(length) > MAX_BODY:
                    return _plain(413, "Request Entity Too Large")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    return _plain(413, "Request Entity Too Large")
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                path, query = _split_target(head.target.decode("latin-1"))
                headers: dict[str, str] = {}
                for name, value in head.headers:
                    key, text = name.decode("latin-1").lower(), value.decode("latin-1")
                    headers[key] = f"{headers[key]}, {text}" if key in headers else text
                return Request(
                    head.method.decode("ascii").upper(), path, query, headers, bytes(body)
                )
            else:  # ConnectionClosed (or PAUSED, which cannot happen between cycles)
                return None

    async def _send(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        reply: Reply,
    ) -> bool:
        """Deliver a reply; return whether the connection may serve another request."""
        try:
            return await self._deliver(conn, reader, writer, reply)
        except (ConnectionError, OSError):  # a write failed: the head was on its way
            self._gone(reply, head_sent=True)
            raise

    @staticmethod
    def _gone(reply: Reply, *, head_sent: bool) -> None:
        if reply.on_client_gone is not None:
            reply.on_client_gone(head_sent)

    async def _deliver(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        reply: Reply,
    ) -> bool:
        if reply.head_delay > 0 and not await _pause(reader, reply.head_delay):
            return self._abandon(reply, writer, head_sent=False)
        if not reply.send_head:
            await self._reset(writer)
            return False
        headers = list(reply.headers)
        headers.append(("date", email.utils.formatdate(self._clock(), usegmt=True)))
        if reply.parts is None and not any(k.lower() == "content-length" for k, _ in headers):
            headers.append(("content-length", str(len(reply.body))))
        if reply.ending is Ending.CLOSE:
            headers.append(("connection", "close"))
        try:
            phrase = http.HTTPStatus(reply.status).phrase.encode("ascii")
        except ValueError:
            phrase = b""
        head = (
            conn.send(h11.Response(status_code=reply.status, headers=headers, reason=phrase)) or b""
        )
        pieces = [reply.body] if reply.parts is None else reply.parts
        raw = [conn.send(h11.Data(data=p)) for p in pieces if p]
        chunks = [c for c in raw if c]
        if reply.cut is not None:
            joined = b"".join(chunks)
            chunks = [joined[: int(len(joined) * reply.cut)]]
        complete = reply.ending in (Ending.COMPLETE, Ending.CLOSE)
        tail = (conn.send(h11.EndOfMessage()) or b"") if complete else b""
        writer.write(head)
        await writer.drain()
        if reply.trickle > 0:
            if not await self._trickle(reader, writer, b"".join(chunks) + tail, reply.trickle):
                return self._abandon(reply, writer)
        else:
            for index, chunk in enumerate(chunks):
                if index and reply.part_delay > 0 and not await _pause(reader, reply.part_delay):
                    return self._abandon(reply, writer)
                writer.write(chunk)
                await writer.drain()
            if tail:
                writer.write(tail)
                await writer.drain()
        if reply.ending is Ending.RESET:
            await asyncio.sleep(_RESET_GRACE)
            await self._reset(writer)
            return False
        if reply.ending is Ending.STALL:
            while await reader.read(_READ_SIZE):
                pass
            return False
        return reply.ending is Ending.COMPLETE

    def _abandon(
        self, reply: Reply, writer: asyncio.StreamWriter, *, head_sent: bool = True
    ) -> bool:
        """Give up on a client that left: report it, drop the connection."""
        self._gone(reply, head_sent=head_sent)
        writer.transport.abort()
        return False

    @staticmethod
    async def _trickle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, seconds: float
    ) -> bool:
        """Write data a byte at a time (batched only when behind schedule) over ``seconds``.

        Returns:
            ``False`` if the client left first.
        """
        loop = asyncio.get_running_loop()
        start, total, sent = loop.time(), len(data), 0
        while sent < total:
            if reader.at_eof():
                return False
            now = loop.time()
            due = min(total, int((now - start) / seconds * total))
            if due <= sent:
                next_at = start + seconds * (sent + 1) / total
                await asyncio.sleep(max(next_at - now, _MIN_SLEEP))
                continue
            writer.write(data[sent:due])
            await writer.drain()
            sent = due
        return True

    @staticmethod
    async def _reset(writer: asyncio.StreamWriter) -> None:
        """Abort the connection with a TCP reset (SO_LINGER 0)."""
        sock = writer.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
