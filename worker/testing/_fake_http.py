"""The simulated server's HTTP writing: few system calls per response."""

from __future__ import annotations

import contextlib
import socket
from http.server import BaseHTTPRequestHandler
from typing import Any

import orjson


class Responder(BaseHTTPRequestHandler):
    """HTTP/1.1 responses, each header block in the same write as its body or first chunk:
    one system call per response, per chunk."""

    protocol_version = "HTTP/1.1"
    # a stream is many small writes: without TCP_NODELAY each waits for the client's
    # delayed ACK (~40 ms on Linux)
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def head(self, status: int, kind: str, headers: dict[str, str], length: int | None) -> bytes:
        """Status line and headers; ``length`` None: a chunked body."""
        lines = [f"HTTP/1.1 {status} {self.responses[status][0]}", f"Content-Type: {kind}"]
        if length is None:
            lines += ["Transfer-Encoding: chunked", "Cache-Control: no-cache"]
        else:
            lines.append(f"Content-Length: {length}")
        lines += [f"{key}: {value}" for key, value in headers.items()]
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def write(self, data: bytes) -> bool:
        try:
            self.connection.sendall(data)  # wfile is unbuffered: the same, less work
            return True
        except OSError:  # the client went away
            self.close_connection = True
            return False

    def send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> bool:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        return self.write(self.head(status, "application/json", headers or {}, len(body)) + body)

    def hang_up(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
