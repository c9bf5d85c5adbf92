"""The console's pages and actions: read the query or form, call the domain, render HTML.

Every page and action checks the same role as the GraphQL field it mirrors
(`broker.auth.FIELD_ROLES`) and then calls the same domain operation with the same
`Caller`, so ownership rules are applied in one place for both. Actions are two
POSTs: the first renders a confirmation, the second (with `confirm`) acts and
redirects back with the result (post/redirect/get).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from uuid import UUID

import httpx
from redis.exceptions import RedisError
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from broker import auth, errors
from broker.console import signin
from broker.http import gates
from broker.models import Caller, Listener, ListenerFilter, NamespaceFilter
from broker.operations import RATE_WINDOW_MINUTES, Broker, ListenerSummary

log = logging.getLogger(__name__)

PAGE_SIZE = 50
# Bounds of a posted form: a selection of a page of subjects fits easily.
MAX_FORM_BYTES = 512 * 1024
MAX_FORM_FIELDS = 2000
EVENTS_PAGE_SIZE = 100
FLASH = "flash"
RETURN_TO = "return_to"
SORTS = ("user_key", "namespace", "routing_key", "owner", "pending", "silenced", "oldest")
BY_BACKLOG = frozenset({"pending", "silenced", "oldest"})
ACTIONS = {"silence": "event_silence", "unsilence": "event_unsilence", "rerun": "event_rerun"}
PAST_TENSE = {"silence": "Silenced", "unsilence": "Unsilenced", "rerun": "Reran"}

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def _age(ms: int | None, now: float | None = None) -> str:
    """A short human duration since (or, negative, until) a time in ms."""
    if ms is None:
        return "—"
    seconds = int((now or time.time()) - ms / 1000)
    future, seconds = seconds < 0, abs(seconds)
    if seconds < 60:
        text = f"{seconds}s"
    elif seconds < 3600:
        text = f"{seconds // 60}m {seconds % 60}s"
    elif seconds < 86400:
        text = f"{seconds // 3600}h {seconds % 3600 // 60}m"
    else:
        text = f"{seconds // 86400}d {seconds % 86400 // 3600}h"
    return f"in {text}" if future else text


def _timestamp(ms: int | None) -> str:
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


templates.env.filters["age"] = _age
templates.env.filters["timestamp"] = _timestamp


class BadRequest(Exception):
    """A query parameter or form field the console cannot use; shown to the user."""


@dataclass
class Page:
    """What a handler needs: the request, who asks, and the domain."""

    request: Request
    principal: auth.Principal
    caller: Caller
    broker: Broker
    form: FormData = field(default_factory=FormData)

    def require(self, field_name: str) -> None:
        gates.require_root_role(self.principal, field_name)

    def render(self, template: str, status_code: int = 200, **context: Any) -> Response:
        session = self.request.session
        context.update(
            principal=self.principal,
            csrf=signin.csrf_token(self.request),
            flash=session.pop(FLASH, None),
        )
        return templates.TemplateResponse(self.request, template, context, status_code=status_code)

    def done(self, url: str, text: str, ok: bool = True) -> Response:
        self.request.session[FLASH] = {"ok": ok, "text": text}
        return RedirectResponse(url, status_code=303)


Handler = Callable[[Page], Awaitable[Response]]


class Console:
    """The handlers, bound to the domain operations and the sign-in."""

    def __init__(
        self,
        broker: Broker,
        sign_in: signin.SignIn,
        caller_of: Callable[[auth.Principal], Caller],
        origin: Callable[[Request], str],
    ) -> None:
        self.broker = broker
        self.sign_in = sign_in
        self.caller_of = caller_of
        self.origin = origin

    def page(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """A console endpoint: signed in, CSRF-checked on POST, errors shown as pages."""

        async def endpoint(request: Request) -> Response:
            principal = await self.sign_in.principal(request)
            if principal is None:
                if not self.sign_in.configured:
                    return _message(request, 503, "Sign-in is not configured", _NOT_CONFIGURED)
                if request.method != "GET":
                    return _message(request, 403, "Signed out", "Sign in again and retry.")
                # Back to this page after signing in (a path of ours, never another site).
                request.session[RETURN_TO] = request.url.path + (
                    f"?{request.url.query}" if request.url.query else ""
                )
                return RedirectResponse(request.url_for("console:login"), status_code=303)
            page = Page(request, principal, self.caller_of(principal), self.broker)
            try:
                if request.method == "POST":
                    page.form = await read_form(request)
                    if not signin.csrf_valid(request, page.form.get("csrf"), self.origin(request)):
                        return _message(request, 403, "Refused", _CSRF_REFUSED)
                return await handler(page)
            except BadRequest as error:
                return _message(request, 400, "Bad request", str(error))
            except errors.PermissionDenied as error:
                return _message(request, 403, "Not allowed", str(error))
            except errors.BrokerError as error:
                return _message(request, 400, "Refused", str(error))
            except (RedisError, OSError) as error:
                log.warning("console: the event store is unavailable (%s)", error)
                return _message(request, 503, "Unavailable", str(errors.StorageUnavailable()))

        return endpoint

    # Sign-in ------------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        if not self.sign_in.required:
            return RedirectResponse(request.url_for("console:overview"), status_code=303)
        if not self.sign_in.configured:
            return _message(request, 503, "Sign-in is not configured", _NOT_CONFIGURED)
        try:
            response: Response = await self.sign_in.start(request)
        except (signin.SignInError, httpx.HTTPError, OSError, ValueError) as error:
            log.warning("console: cannot reach the identity provider (%r)", error)
            return _message(request, 503, "Unavailable", "The identity provider is unreachable.")
        return response

    async def callback(self, request: Request) -> Response:
        if not self.sign_in.configured:
            return _message(request, 503, "Sign-in is not configured", _NOT_CONFIGURED)
        return_to = request.session.get(RETURN_TO)
        try:
            await self.sign_in.finish(request)
        except signin.SignInError as error:
            log.info("console: sign-in failed (%s)", error)
            return _message(request, 400, "Sign-in failed", str(error.description or error))
        except errors.NotAuthenticated as error:
            return _message(request, 403, "Sign-in refused", str(error))
        except (httpx.HTTPError, OSError, ValueError) as error:
            log.warning("console: sign-in failed (%r)", error)
            return _message(request, 503, "Unavailable", "The identity provider is unreachable.")
        overview = str(request.url_for("console:overview"))
        if not (isinstance(return_to, str) and return_to.startswith(urlsplit(overview).path)):
            return_to = overview
        return RedirectResponse(return_to, status_code=303)

    async def logout(self, request: Request) -> Response:
        try:
            form = await read_form(request)
        except BadRequest as error:
            return _message(request, 400, "Bad request", str(error))
        if not signin.csrf_valid(request, form.get("csrf"), self.origin(request)):
            return _message(request, 403, "Refused", _CSRF_REFUSED)
        request.session.clear()
        return _message(request, 200, "Signed out", "You are signed out of the console.")

    # Pages --------------------------------------------------------------------------------

    async def overview(self, page: Page) -> Response:
        """Health, the fan-out backlog and the namespaces."""
        page.require("event_namespaces")
        namespaces = await page.broker.namespaces(page.caller, NamespaceFilter(), None, None)
        listeners = await page.broker.listeners(page.caller, ListenerFilter(), None, None)
        per_namespace: dict[str, int] = {}
        for listener in listeners.objects:
            per_namespace[listener.namespace] = per_namespace.get(listener.namespace, 0) + 1
        lag = await page.broker.fanout_lag()
        now_ms = time.time() * 1000
        oldest = min((shard.oldest_ms for shard in lag if shard.oldest_ms), default=None)
        return page.render(
            "overview.html",
            reachable=await page.broker.store_reachable(),
            backlog=sum(shard.entries for shard in lag),
            backlog_oldest=oldest,
            shards=[(i, shard) for i, shard in enumerate(lag) if shard.entries],
            namespaces=namespaces.objects,
            listener_counts=per_namespace,
            now_ms=now_ms,
        )

    async def listeners(self, page: Page) -> Response:
        """Listeners with their backlog: filtered, sorted, paged."""
        page.require("event_listeners")
        query = page.request.query_params
        namespace = query.get("namespace") or None
        owner = _uuid_param(query.get("owner") or None, "owner")
        backlog = query.get("backlog") == "1"
        older = _int_param(query.get("older") or None, "older", 0)
        sort = query.get("sort") or "user_key"
        if sort not in SORTS:
            raise BadRequest(f"sort must be one of {', '.join(SORTS)}")
        descending = query.get("order") == "desc"
        number = _int_param(query.get("page") or "1", "page", 1) or 1
        selection = ListenerFilter(
            owners=None if owner is None else frozenset([owner]),
            namespaces=None if namespace is None else NamespaceFilter(frozenset([namespace])),
        )
        found = (await page.broker.listeners(page.caller, selection, None, None)).objects
        now_ms = time.time() * 1000
        window = slice((number - 1) * PAGE_SIZE, number * PAGE_SIZE)
        if sort in BY_BACKLOG or backlog or older is not None:
            # Sorting or filtering by backlog needs every listener's counts.
            rows = await page.broker.listener_summaries(page.caller, found)
            if backlog:
                rows = [row for row in rows if row.stats is not None and row.stats.pending > 0]
            if older is not None:
                cutoff = now_ms - older * 60_000
                rows = [row for row in rows if (_oldest(row) or now_ms) <= cutoff]
            rows.sort(key=_sort_key(sort), reverse=descending)
            total, shown = len(rows), rows[window]
        else:
            # By name: only the shown page's counts are read, however many listeners exist.
            found.sort(key=lambda item: _name_key(item, sort), reverse=descending)
            total = len(found)
            shown = await page.broker.listener_summaries(page.caller, found[window])
        rates = await page.broker.listener_rates(page.caller, [row.listener for row in shown])
        params = {
            key: value for key, value in query.items() if key != "page" and value not in ("", None)
        }
        return page.render(
            "listeners.html",
            rows=list(zip(shown, rates, strict=True)),
            total=total,
            number=number,
            pages=max(1, -(-total // PAGE_SIZE)),
            params=params,
            namespace=namespace or "",
            owner=query.get("owner", ""),
            backlog=backlog,
            older="" if older is None else older,
            sort=sort,
            descending=descending,
            sorts=SORTS,
            window=RATE_WINDOW_MINUTES,
            now_ms=now_ms,
        )

    async def listener(self, page: Page) -> Response:
        """One listener: its counts and rates, and a page of its pending events."""
        page.require("events")
        listener = await self._listener(page)
        query = page.request.query_params
        search = (query.get("q") or "").strip() or None
        after = query.get("after") or None
        waiting = await page.broker.waiting_events(
            page.caller, listener, search, after, EVENTS_PAGE_SIZE
        )
        (summary,) = await page.broker.listener_summaries(page.caller, [listener])
        (rates,) = await page.broker.listener_rates(page.caller, [listener])
        more = None
        if search is None and len(waiting) == EVENTS_PAGE_SIZE:
            more = waiting[-1].event.order_key
        return page.render(
            "listener.html",
            listener=listener,
            stats=summary.stats,
            rates=rates,
            window=RATE_WINDOW_MINUTES,
            waiting=waiting,
            search=search or "",
            after=after,
            more=more,
            now_ms=time.time() * 1000,
        )

    # Actions ------------------------------------------------------------------------------

    async def change_events(self, page: Page) -> Response:
        """Silence, unsilence or rerun selected (or all) events of a listener."""
        listener = await self._listener(page)
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

    async def delete_listener(self, page: Page) -> Response:
        page.require("event_listener_delete")
        listener = await self._listener(page)
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

    async def delete_namespace(self, page: Page) -> Response:
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
        return page.done(
            str(page.request.url_for("console:overview")), f"Deleted namespace {name}."
        )

    async def _listener(self, page: Page) -> Listener:
        uuid = _uuid_param(page.request.path_params["uuid"], "listener")
        found = None if uuid is None else await page.broker.listener(uuid)
        if found is None:
            raise BadRequest("No such listener.")
        return found


_NOT_CONFIGURED = (
    "BROKER_AUTH is oidc, but BROKER_CONSOLE_CLIENT_ID is not set, so the console cannot "
    "sign anyone in."
)
_CSRF_REFUSED = "The form was stale or came from another site. Reload the page and retry."


async def read_form(request: Request) -> FormData:
    """The posted form (URL-encoded, as the console's forms send it), within `MAX_FORM_BYTES`.

    Parsed with the standard library rather than Starlette's `request.form()`, which needs
    python-multipart: installing that would also switch on multipart parsing in Ariadne's
    GraphQL handler, a surface the API deliberately does not have (broker/http/limits.py).
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip()
    if media_type != "application/x-www-form-urlencoded":
        raise BadRequest("Forms must be posted as application/x-www-form-urlencoded.")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadRequest("The form is too large.")
    try:
        fields = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except UnicodeDecodeError:
        raise BadRequest("The form is not UTF-8.") from None
    except ValueError:
        raise BadRequest(f"The form has more than {MAX_FORM_FIELDS} fields.") from None
    return FormData(list[tuple[str, str | UploadFile]](fields))


def _message(request: Request, status: int, title: str, text: str) -> Response:
    return templates.TemplateResponse(
        request, "message.html", {"title": title, "text": text}, status_code=status
    )


def _confirmed(form: FormData) -> bool:
    return form.get("confirm") == "yes"


def _uuid_param(value: str | None, what: str) -> UUID | None:
    if value is None:
        return None
    try:
        return UUID(value)
    except ValueError:
        raise BadRequest(f"{what} must be a UUID") from None


def _int_param(value: str | None, what: str, minimum: int) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{what} must be a whole number") from None
    if not minimum <= number <= 10**9:
        raise BadRequest(f"{what} must be at least {minimum}")
    return number


def _oldest(row: ListenerSummary) -> int | None:
    if row.stats is None:
        return None
    found = [ms for ms in (row.stats.oldest_ms, row.stats.oldest_silenced_ms) if ms is not None]
    return min(found, default=None)


def _sort_key(sort: str) -> Callable[[ListenerSummary], Any]:
    def key(row: ListenerSummary) -> Any:
        listener, stats = row.listener, row.stats
        if sort == "pending":
            return (-1 if stats is None else stats.pending, listener.user_key)
        if sort == "silenced":
            return (-1 if stats is None else stats.silenced, listener.user_key)
        if sort == "oldest":
            # Oldest first; listeners with nothing pending (or not visible) last.
            oldest = _oldest(row)
            return (oldest is None, oldest or 0, listener.user_key)
        return _name_key(listener, sort)

    return key


def _name_key(listener: Listener, sort: str) -> tuple[str, str, str]:
    return (str(getattr(listener, sort)), listener.user_key, str(listener.uuid))
