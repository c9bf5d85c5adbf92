"""uvicorn's httptools protocol with bounds on a request's head (its URL and headers).

uvicorn bounds a request head only for its pure-Python h11 protocol; with httptools (the
fast one, which the broker runs) a client may send megabytes of headers, and every one
costs a Python call before the app sees the request. Unauthenticated callers could stall
everyone that way. No library offers the bound for httptools, so this subclass counts
what the parser hands over and stops at the limits below; uvicorn then answers
`400 Invalid HTTP request received.` and closes the connection.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Like common servers (nginx: 4 x 8 KB buffers; Node.js: 16 KB; Apache: 100 fields).
# A Keycloak access token in `Authorization` is a few KB.
MAX_HEAD_BYTES = 32 * 1024
MAX_HEADERS = 100


class HeadTooLarge(Exception):
    """Raised inside the parser's callbacks; httptools turns it into a parser error."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _head_bytes = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # Called for every header of every request: the checks are inlined.
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD_BYTES or len(self.headers) >= MAX_HEADERS:
            raise HeadTooLarge(f"request head over {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} headers")
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise HeadTooLarge(f"request head over {MAX_HEAD_BYTES} bytes")
