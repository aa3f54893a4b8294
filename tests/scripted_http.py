"""A real HTTP server on loopback whose answers a test scripts.

    with scripted_server(lambda request: httpx.Response(503)) as server:
        SandboxClient(server.url).run("print(1)")

The handler takes an httpx.Request and returns an httpx.Response, or raises `Drop` to close
the connection unanswered. Clients under test then use their own transport, pool and
timeouts, and each rule can be driven exactly. The server counts the connections it
accepted (`opened`) and those the client closed or dropped (`closed`).
"""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Callable, Iterator

import httpx


class Drop(Exception):
    """Raised by a handler: the server closes the connection without an answer."""


class _Scripted(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the sandbox service

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.opened += 1

    def finish(self):
        super().finish()
        with self.server.lock:
            self.server.closed += 1

    def do_GET(self):
        self._answer(b"")

    def do_POST(self):
        self._answer(self.rfile.read(int(self.headers["Content-Length"])))

    def _answer(self, body: bytes) -> None:
        request = httpx.Request(self.command, f"{self.server.url}{self.path}", content=body)
        try:
            response = self.server.handler(request)
        except Drop:
            self.close_connection = True
            return
        response.read()
        self.send_response(response.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(response.content)))
        self.end_headers()
        self.wfile.write(response.content)

    def log_message(self, *args):
        pass


class ScriptedServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]):
        super().__init__(("127.0.0.1", 0), _Scripted)
        self.handler = handler
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.lock = threading.Lock()
        self.opened = self.closed = 0


@contextlib.contextmanager
def scripted_server(handler: Callable[[httpx.Request], httpx.Response]) -> Iterator[ScriptedServer]:
    server = ScriptedServer(handler)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
