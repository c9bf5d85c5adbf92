"""An example OS2mo integration on FastRAMQPI, unchanged, using the event broker as its OS2mo.

It declares a listener for `person` events in the `mo` namespace and handles each event by
recording it. Run it with FastRAMQPI's ordinary settings pointed at the broker:

    MO_URL=http://127.0.0.1:8080 AUTH_SERVER=http://127.0.0.1:8080/auth \
    CLIENT_ID=example CLIENT_SECRET=dev AMQP= DATABASE= \
    uvicorn --factory app:create_app --host 127.0.0.1 --port 8000

FastRAMQPI posts each fetched event to its own HTTP server at http://127.0.0.1:8000, so the
integration must listen there. `EXAMPLE_FAIL_ONCE` (comma-separated subjects) makes the
handler fail the first delivery of those subjects, to show the broker's redelivery after
its back-off. `GET /seen` lists every delivery the handler got, with its arrival time.
"""

from __future__ import annotations

import os
import time
from typing import Any
from uuid import UUID

from fastapi import FastAPI, Response
from fastramqpi.config import Settings
from fastramqpi.events import Event, GraphQLEvents, Listener
from fastramqpi.main import FastRAMQPI

LISTENER = Listener(
    namespace="mo",
    user_key="example-person",
    routing_key="person",
    path="/events/person",
    parallelism=1,
)


def create_app() -> FastAPI:
    fail_once = {item for item in os.environ.get("EXAMPLE_FAIL_ONCE", "").split(",") if item}
    deliveries: list[dict[str, Any]] = []
    fastramqpi = FastRAMQPI(
        application_name="example-integration",
        # amqp and database are optional (None): the integration needs only the broker.
        settings=Settings(),
        graphql_version=25,
        graphql_events=GraphQLEvents(declare_listeners=[LISTENER]),
    )
    app = fastramqpi.get_app()

    @app.post("/events/person")
    async def handle_person(event: Event[UUID], response: Response) -> None:
        """Handle one event; must be idempotent, since delivery is at-least-once."""
        subject = str(event.subject)
        first = not any(item["subject"] == subject for item in deliveries)
        deliveries.append({"subject": subject, "priority": event.priority, "at": time.time()})
        if first and subject in fail_once:
            # Not acknowledged: the broker hands it out again after its retry back-off.
            response.status_code = 500

    @app.get("/seen")
    async def seen() -> list[dict[str, Any]]:
        return deliveries

    return app
