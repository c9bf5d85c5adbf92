"""The domain as the console's operators see it: backlogs, rates, waiting events, actions.

`Management` is the `Broker` with what an operator's console needs beyond the API, on the
same rules and code paths (ownership, role checks, `_update`): every listener's backlog
(read now, or from the stats snapshot for sorting by it), recent rates, a listener's
waiting events, and actions on one listener's events.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from broker import errors
from broker.metrics import Metrics
from broker.models import Caller, EventSelection, Listener, ListenerFilter, PendingEvent
from broker.notify import Notifier
from broker.operations import MAX_SUBJECT_LENGTH, Broker, cursor_order_key
from broker.registry import MAX_PAGE_SIZE, check_list, page_size
from broker.settings import Settings
from broker.stats import Stats
from broker.storage import gauges
from broker.storage.gauges import IngestLag, ListenerStats
from broker.storage.store import ListenerRates, Store, UpdateAction

# The console's "recent" send and acknowledge rates: this many whole minutes back.
RATE_WINDOW_MINUTES = 5


@dataclass(frozen=True, slots=True)
class ListenerSummary:
    """A listener with its backlog; `stats` is `None` where the caller may not see its events."""

    listener: Listener
    stats: ListenerStats | None


@dataclass(frozen=True, slots=True)
class WaitingEvent:
    """A pending event and when its back-off ends (`None`: fetchable now)."""

    event: PendingEvent
    retry_at_ms: int | None


class Management(Broker):
    """The broker's operations plus the console's views of them and its stats snapshot."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        notifier: Notifier,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(store, settings, notifier, metrics)
        # Behind /metrics too: the app's one snapshot of every listener's figures.
        self.stats = Stats(
            store, settings.stats_interval_seconds, self.metrics.redis_errors.labels("metrics").inc
        )

    async def listener_summaries(
        self, caller: Caller, listeners: Sequence[Listener]
    ) -> list[ListenerSummary]:
        """The listeners with their pending counts, for those whose events the caller may see.

        The same reads as the metrics' gauges (a few pipelined commands per 500 listeners).
        """
        visible = [item for item in listeners if self._may_see_events(caller, item)]
        stats = dict(
            zip(
                (item.uuid for item in visible),
                await gauges.listener_stats(self.store, [item.uuid for item in visible]),
                strict=True,
            )
        )
        return [ListenerSummary(item, stats.get(item.uuid)) for item in listeners]

    async def backlog_summaries(
        self, caller: Caller, listeners: Sequence[Listener]
    ) -> tuple[list[ListenerSummary], float | None]:
        """As `listener_summaries`, for sorting or filtering the listeners by their backlog.

        From the stats snapshot when it is recent (and its age in seconds), so the cost
        is the caller's listeners, not reading their every figure; listeners declared
        since it was read are read now. Without a recent snapshot (none yet, or a quiet
        spell), everything is read now (age `None`) and the snapshot is started for the
        next time.
        """
        snapshot = await self.stats.snapshot(wait=0)
        if snapshot is None:
            return await self.listener_summaries(caller, listeners), None
        held = snapshot.stats_of
        visible = [item for item in listeners if self._may_see_events(caller, item)]
        since = [item.uuid for item in visible if item.uuid not in held]
        stats = dict(zip(since, await gauges.listener_stats(self.store, since), strict=True))
        stats.update((item.uuid, held[item.uuid]) for item in visible if item.uuid in held)
        summaries = [ListenerSummary(item, stats.get(item.uuid)) for item in listeners]
        return summaries, self.stats.age()

    async def listener_rates(
        self, caller: Caller, listeners: Sequence[Listener]
    ) -> list[ListenerRates | None]:
        """Recent per-minute rates of stored and acknowledged events (`None`: not visible)."""
        visible = [item for item in listeners if self._may_see_events(caller, item)]
        now_ms = int(time.time() * 1000)
        found = await self.store.listener_rates(
            [item.uuid for item in visible], now_ms, RATE_WINDOW_MINUTES
        )
        rates = dict(zip((item.uuid for item in visible), found, strict=True))
        return [rates.get(item.uuid) for item in listeners]

    async def waiting_events(
        self,
        caller: Caller,
        listener: Listener,
        search: str | None,
        after: str | None,
        limit: int,
    ) -> list[WaitingEvent]:
        """A page of the listener's pending events in age order, or those matching `search`.

        A search looks at every pending event of the listener and answers its first
        `limit` matches (no further pages).
        """
        if not self._may_see_events(caller, listener):
            raise errors.PermissionDenied()
        limit = page_size(limit, None) or MAX_PAGE_SIZE
        if search:
            if len(search) > MAX_SUBJECT_LENGTH:
                raise errors.SubjectTooLarge()
            events = await self.store.search_pending(listener.uuid, search, limit)
        else:
            after = None if after is None else cursor_order_key(after)
            events = await self.store.pending(listener.uuid, EventSelection(), after, limit)
        due = await self.store.retry_at(listener.uuid, [event.subject for event in events])
        return [WaitingEvent(event, at) for event, at in zip(events, due, strict=True)]

    async def change_events(
        self,
        caller: Caller,
        action: UpdateAction,
        listener: Listener,
        subjects: Sequence[str] | None,
    ) -> list[PendingEvent]:
        """Silence, unsilence or rerun some (`None`: all) of one listener's events.

        The console's form of the three mutations: the same rules, but a listener the
        caller may not manage is refused (not skipped), and the changed events come back.
        """
        if not self._may_manage(caller, listener):
            raise errors.PermissionDenied()
        selection = EventSelection()
        if subjects is not None:
            check_list("subjects", subjects, MAX_SUBJECT_LENGTH)
            subjects = sorted(set(subjects))
        elif action == "silence":
            # `event_silence` names its subjects; silencing all of them pages through the
            # listener's pending events (`_update`), touching only those not yet silenced.
            selection = EventSelection(silenced=False)
        only = ListenerFilter(uuids=frozenset([listener.uuid]))
        return await self._update(caller, action, only, selection, subjects)

    async def fanout_lag(self) -> list[IngestLag]:
        """Per ingest shard: entries not yet fanned out to listeners, and the oldest's age."""
        return await gauges.ingest_lag(self.store)

    async def store_reachable(self) -> bool:
        return await self.store.ping()
