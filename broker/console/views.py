"""What every console page shares: sign-in, CSRF, forms, errors as pages, templates.

The pages are in `listings.py`, the actions in `actions.py`. Every page and action
checks the same role as the GraphQL field it mirrors (`broker.auth.FIELD_ROLES`) and
then calls the same domain operation with the same `Caller`, so ownership rules are
applied in one place for both.
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
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from broker import auth, errors, inputs
from broker.console import signin
from broker.http import gates
from broker.management import Management
from broker.models import Caller, Listener
from broker.storage.connection import UNAVAILABLE

log = logging.getLogger(__name__)

# Bounds of a posted form: a selection of a page of subjects fits easily.
MAX_FORM_BYTES = 512 * 1024
MAX_FORM_FIELDS = 2000
FLASH = "flash"
RETURN_TO = "return_to"

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
    broker: Management
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
    """The sign-in handlers, and `page`, which makes endpoints of the pages and actions."""

    def __init__(
        self,
        broker: Management,
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
                # Query parameters pass the same rules as forms (Starlette's own reading
                # would turn bad UTF-8 into U+FFFD and keep control characters).
                checked_fields(request.url.query, "The address", MAX_FORM_FIELDS)
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
            except UNAVAILABLE as error:
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
        text = body.decode()
    except UnicodeDecodeError:
        raise BadRequest("The form is not UTF-8.") from None
    fields = checked_fields(text, "The form", MAX_FORM_FIELDS)
    return FormData(list[tuple[str, str | UploadFile]](fields))


def checked_fields(encoded: str, what: str, max_fields: int) -> list[tuple[str, str]]:
    """URL-encoded fields, refused unless UTF-8 and text (the API's input rules)."""
    try:
        fields = parse_qsl(
            encoded, keep_blank_values=True, max_num_fields=max_fields, errors="strict"
        )
    except UnicodeDecodeError:
        raise BadRequest(f"{what} is not UTF-8.") from None
    except ValueError:
        raise BadRequest(f"{what} has more than {max_fields} fields.") from None
    try:
        for key, value in fields:
            inputs.check_text(f"A field name in {what.lower()}", key)
            inputs.check_text(f"{what}'s field {key}", value)
    except errors.InvalidInput as error:
        raise BadRequest(f"{error}.") from None
    return fields


def _message(request: Request, status: int, title: str, text: str) -> Response:
    return templates.TemplateResponse(
        request, "message.html", {"title": title, "text": text}, status_code=status
    )


def uuid_param(value: str | None, what: str) -> UUID | None:
    if value is None:
        return None
    try:
        return UUID(value)
    except ValueError:
        raise BadRequest(f"{what} must be a UUID") from None


def int_param(value: str | None, what: str, minimum: int) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{what} must be a whole number") from None
    if not minimum <= number <= 10**9:
        raise BadRequest(f"{what} must be at least {minimum}")
    return number


async def listener_of(page: Page) -> Listener:
    """The listener named by the path's `uuid`, or a 400 page."""
    uuid = uuid_param(page.request.path_params["uuid"], "listener")
    found = None if uuid is None else await page.broker.listener(uuid)
    if found is None:
        raise BadRequest("No such listener.")
    return found
