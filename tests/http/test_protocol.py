"""A request head (URL and headers) is bounded before the app sees it, on a real server."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from broker.http.protocol import MAX_HEAD_BYTES, MAX_HEADERS
from tests.processes import Process, broker_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    folder = tmp_path_factory.mktemp("protocol")
    process = Process(broker_env(BROKER_DATA_DIR=str(folder / "data")), folder / "broker.log")
    yield process
    process.stop()


def exchange(process: Process, head: bytes) -> bytes:
    """Send a raw request head; what comes back until the server closes or answers."""
    with socket.create_connection(("127.0.0.1", process.port), timeout=10) as connection:
        connection.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def request(headers: list[tuple[str, str]], path: str = "/health/live") -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: broker", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_an_ordinary_head_with_a_large_token_is_served(server: Process) -> None:
    headers = [("Authorization", "Bearer " + "a" * 8000)]
    headers += [(f"X-Header-{n}", "v") for n in range(MAX_HEADERS - 10)]
    assert exchange(server, request(headers)).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    "head",
    [
        request([(f"X-Header-{n}", "v") for n in range(MAX_HEADERS + 1)]),
        request([(f"X-Header-{n}", "v") for n in range(100_000)]),
        request([("X-Large", "v" * (MAX_HEAD_BYTES + 1))]),
        request([], path="/health/live?" + "q" * (MAX_HEAD_BYTES + 1)),
    ],
    ids=["one header too many", "100,000 headers", "one huge header", "a huge URL"],
)
def test_an_oversized_head_is_refused_before_the_app_and_the_server_goes_on(
    server: Process, head: bytes
) -> None:
    assert exchange(server, head).startswith(b"HTTP/1.1 400")
    assert exchange(server, request([])).startswith(b"HTTP/1.1 200")
    assert "Traceback" not in server.output()
