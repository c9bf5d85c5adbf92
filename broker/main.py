"""Entry point for uvicorn: `uvicorn --factory broker.main:app`."""

from __future__ import annotations

from starlette.applications import Starlette

from broker.app import create_app
from broker.cli import load_settings


def app() -> Starlette:
    return create_app(load_settings())
