"""The console's actions on events, listeners and namespaces, each confirmed first.

Each is two POSTs: the first renders a confirmation, the second (with `confirm`) acts
through the same domain operation as GraphQL and redirects back with the result
(post/redirect/get).
"""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.responses import Response

from broker.console.views import BadRequest, Page, listener_of

ACTIONS = {"silence": "event_silence", "unsilence": "event_unsilence", "rerun": "event_rerun"}
PAST_TENSE = {"silence": "Silenced", "unsilence": "Unsilenced", "rerun": "Reran"}


async def change_events(page: Page) -> Response:
    """Silence, unsilence or rerun selected (or all) events of a listener."""
    listener = await listener_of(page)
    form = page.form
    action = str(form.get("action", ""))
    if action not in ACTIONS:
        raise BadRequest("action must be silence, unsilence or rerun")
    page.require(ACTIONS[action])
    everything = form.get("scope") == "all"
    subjects = None if everything else [str(item) for item in form.getlist("subject")]
    if subjects is not None and not subjects:
        raise BadRequest("Select at least one event first.")
    back = str(page.request.url_for("console:listener", uuid=str(listener.uuid)))
    if not _confirmed(form):
        return page.render(
            "confirm.html",
            title=f"{action.capitalize()} events of {listener.user_key}?",
            what=(
                f"Every pending event of {listener.user_key}"
                if subjects is None
                else f"{len(subjects)} event(s)"
            ),
            subjects=subjects or [],
            fields={"action": action, "scope": "all" if everything else "selected"},
            cancel=back,
        )
    changed = await page.broker.change_events(page.caller, action, listener, subjects)  # type: ignore[arg-type]
    return page.done(back, f"{PAST_TENSE[action]} {len(changed)} event(s).")


async def delete_listener(page: Page) -> Response:
    page.require("event_listener_delete")
    listener = await listener_of(page)
    form = page.form
    with_events = form.get("delete_pending_events") == "1"
    if not _confirmed(form):
        return page.render(
            "confirm.html",
            title=f"Delete listener {listener.user_key}?",
            what=(
                f"{listener.user_key} ({listener.namespace}/{listener.routing_key})"
                + (" and all its pending events" if with_events else "")
            ),
            subjects=[],
            fields={"delete_pending_events": "1" if with_events else "0"},
            cancel=str(page.request.url_for("console:listener", uuid=str(listener.uuid))),
        )
    await page.broker.delete_listener(page.caller, listener.uuid, with_events)
    listeners = str(page.request.url_for("console:listeners"))
    return page.done(listeners, f"Deleted listener {listener.user_key}.")


async def delete_namespace(page: Page) -> Response:
    page.require("event_namespace_delete")
    form = page.form
    name = str(form.get("name", ""))
    if not name:
        raise BadRequest("name is missing")
    if not _confirmed(form):
        return page.render(
            "confirm.html",
            title=f"Delete namespace {name}?",
            what=f"The namespace {name} (refused while it has listeners)",
            subjects=[],
            fields={"name": name},
            cancel=str(page.request.url_for("console:overview")),
        )
    await page.broker.delete_namespace(page.caller, name)
    return page.done(str(page.request.url_for("console:overview")), f"Deleted namespace {name}.")


def _confirmed(form: FormData) -> bool:
    return form.get("confirm") == "yes"
