"""Entry point for uvicorn: `uvicorn --factory broker.main:app`."""

from __future__ import annotations

from starlette.applications import Starlette

from broker import logs
from broker.app import create_app
from broker.cli import load_settings


def app() -> Starlette:
    # Runs in every worker process, which logs nothing until configured.
    settings = load_settings()
    logs.configure(settings)
    return create_app(settings)
