"""Graceful shutdown: end long polls as soon as the server is told to stop.

uvicorn stops accepting, then waits for the requests in flight before it runs the
lifespan's shutdown, so a long-polling fetch would hold shutdown up for its whole
wait. Chaining onto the server's SIGTERM/SIGINT handlers lets those polls return
at once (with no event) while every other request finishes normally.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

EXIT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def on_exit_signal(callback: Callable[[], None]) -> Iterator[None]:
    """While inside, run `callback` in the event loop when an exit signal arrives.

    Only signals a server already handles are chained (the server's handler still
    runs); outside a server's main thread this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {signum: signal.getsignal(signum) for signum in EXIT_SIGNALS}

    def handle(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(callback)
        chained = previous[signum]
        assert callable(chained)
        chained(signum, frame)

    chained = [signum for signum, handler in previous.items() if callable(handler)]
    for signum in chained:
        signal.signal(signum, handle)
    try:
        yield
    finally:
        for signum in chained:
            if signal.getsignal(signum) is handle:
                signal.signal(signum, previous[signum])
