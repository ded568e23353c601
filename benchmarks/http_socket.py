"""The HTTP API as benchmarks/load.py's clients see a websocket: `send` a predict frame, `recv`
its answer, `close`.

Why an adapter rather than a second client loop: load.py's clients (closed loop, open loop,
answer checks, timings) then drive both ways in with the same code, and the two are compared on
the same frames. Each `send` posts the frame's text as the body of `POST /api/v1/predict` (the
API sets the type and id itself, so the frame is a valid body as it is) on one of `inflight`
keep-alive connections, HTTP/1.1 over asyncio streams with no library in between (a client
library's own cost would be measured as the path's); the answer, whose id is the server's, is
handed back under the frame's id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from urllib.parse import urlsplit

PREDICT_PATH = "/api/v1/predict"
_ID_PREFIX = '"id":"'


class HttpSocket:
    """`inflight` keep-alive connections to one service's predict URL, used as one socket."""

    def __init__(self, base_url: str, inflight: int) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the HTTP API needs an http:// URL, not {base_url!r}")
        self._host, self._port = parts.hostname, parts.port or 80
        self._head = (
            f"POST {parts.path.rstrip('/')}{PREDICT_PATH} HTTP/1.1\r\n"
            f"Host: {parts.netloc}\r\nContent-Type: application/json\r\n"
        ).encode()
        self._size = inflight
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self._open: list[asyncio.StreamWriter] = []
        self._answers: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def connect(cls, base_url: str, inflight: int) -> HttpSocket:
        socket = cls(base_url, inflight)
        for _ in range(max(1, inflight)):
            reader, writer = await asyncio.open_connection(socket._host, socket._port)
            socket._open.append(writer)
            socket._idle.put_nowait((reader, writer))
        return socket

    async def send(self, frame: str) -> None:
        """Post one predict frame; its answer comes out of `recv`."""
        start = frame.index(_ID_PREFIX) + len(_ID_PREFIX)
        request_id = frame[start : frame.index('"', start)]
        task = asyncio.ensure_future(self._post(frame.encode(), request_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def recv(self) -> str:
        return await self._answers.get()

    async def _post(self, body: bytes, request_id: str) -> None:
        reader, writer = await self._idle.get()
        try:
            writer.write(self._head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            head = await reader.readuntil(b"\r\n\r\n")
            length, server_id = 0, ""
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"x-request-id":
                    server_id = value.strip().decode()
            raw = (await reader.readexactly(length)).decode()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            error = {"type": "error", "id": request_id, "code": f"http_{type(exc).__name__}"}
            self._answers.put_nowait(json.dumps(error))
            return
        self._idle.put_nowait((reader, writer))
        # The answer under the frame's id, without decoding it here (load.py decodes it once).
        ours = raw.replace(f'"id":"{server_id}"', f'"id":"{request_id}"', 1)
        self._answers.put_nowait(ours)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for writer in self._open:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
