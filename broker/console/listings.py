"""The console's pages: the overview, the listeners (filtered, sorted, paged), one listener."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.responses import Response

from broker.console.views import BadRequest, Page, int_param, listener_of, uuid_param
from broker.management import RATE_WINDOW_MINUTES, ListenerSummary
from broker.models import Listener, ListenerFilter, NamespaceFilter
from broker.storage import records

PAGE_SIZE = 50
EVENTS_PAGE_SIZE = 100
SORTS = ("user_key", "namespace", "routing_key", "owner", "pending", "silenced", "oldest")
BY_BACKLOG = frozenset({"pending", "silenced", "oldest"})


async def overview(page: Page) -> Response:
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


async def listeners(page: Page) -> Response:
    """Listeners with their backlog: filtered, sorted, paged."""
    page.require("event_listeners")
    query = page.request.query_params
    namespace = query.get("namespace") or None
    owner = uuid_param(query.get("owner") or None, "owner")
    backlog = query.get("backlog") == "1"
    older = int_param(query.get("older") or None, "older", 0)
    sort = query.get("sort") or "user_key"
    if sort not in SORTS:
        raise BadRequest(f"sort must be one of {', '.join(SORTS)}")
    descending = query.get("order") == "desc"
    number = int_param(query.get("page") or "1", "page", 1) or 1
    selection = ListenerFilter(
        owners=None if owner is None else frozenset([owner]),
        namespaces=None if namespace is None else NamespaceFilter(frozenset([namespace])),
    )
    found = (await page.broker.listeners(page.caller, selection, None, None)).objects
    now_ms = time.time() * 1000
    window = slice((number - 1) * PAGE_SIZE, number * PAGE_SIZE)
    figures_age = None
    if sort in BY_BACKLOG or backlog or older is not None:
        # Sorting or filtering by backlog needs every listener's counts: the snapshot's.
        rows, figures_age = await page.broker.backlog_summaries(page.caller, found)
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
        figures_age=figures_age,
        stats_interval=page.broker.settings.stats_interval_seconds,
    )


async def listener(page: Page) -> Response:
    """One listener: its counts and rates, and a page of its pending events."""
    page.require("events")
    listener = await listener_of(page)
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
        last = waiting[-1].event
        more = records.order_key(last.created_ms, last.subject)
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
