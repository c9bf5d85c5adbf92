"""Entry point for uvicorn: `uvicorn --factory broker.main:app`."""

from __future__ import annotations

import gc
import sys

from starlette.applications import Starlette

from broker import logs
from broker.app import create_app
from broker.cli import load_settings
from broker.http.checker import CHECKER


def app() -> Starlette:
    # Runs in every worker process, which logs nothing until configured.
    settings = load_settings()
    logs.configure(settings)
    app = create_app(settings)
    # What exists now (modules, the schemas, the app) lives as long as the process: kept
    # out of the garbage collector's walks, full collections (which hold the GIL, and so
    # stall the event loop) walk less. First sights of hostile documents make plenty of
    # cyclic garbage (graphql-core's token lists), so under such load they do come.
    gc.collect()
    gc.freeze()
    CHECKER.start()  # the child imports and builds the schemas while the server starts
    # First sights are checked in a child process (broker/http/checker.py), but its
    # queue's feeder and result threads still take the GIL in this one, on every hostile
    # document; the event loop waits at most one switch interval for the GIL each time
    # it wakes. 1 ms instead of 5 halved /health/live's latency under hostile documents
    # when a thread did the checking (benchmarks/document_cost.py); idle, nothing
    # contends and it costs nothing.
    sys.setswitchinterval(0.001)
    return app
