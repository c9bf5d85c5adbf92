"""Faults under load, judged by the history checker: Redis failovers, a full Redis, a dead broker.

Each scenario starts its own servers on free ports, runs emitters and consumers against
real broker processes, injects the fault with `kill -9` (or a full memory), lets the
consumers drain, and checks the history: every confirmed event reached every listener.
Lines from each run are printed in the session summary.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis as SyncRedis

from broker.errors import StoreFull
from broker.settings import Settings
from broker.storage.embedded import EmbeddedRedis
from broker.storage.keys import Keys
from tests import clients
from tests.history import REPORTS, History, Load, Verdict
from tests.processes import Process, broker_env
from tests.redis_cluster import LocalCluster
from tests.redis_sentinel import MASTER_NAME, LocalSentinel

pytestmark = [pytest.mark.failover, pytest.mark.slow, pytest.mark.real_redis]

# Short back-offs: an event whose acknowledgement was lost in the fault comes back soon.
FAST_RETRY = {
    "BROKER_RETRY_MIN_SECONDS": "1",
    "BROKER_RETRY_MAX_SECONDS": "1",
    "BROKER_FANOUT_BLOCK_SECONDS": "0.2",
    "BROKER_FANOUT_CLAIM_IDLE_SECONDS": "2",
    "BROKER_FETCH_EMPTY_CACHE_SECONDS": "1",
    "BROKER_REDIS_WAIT_TIMEOUT_MS": "1000",
}
UNDER_LOAD_SECONDS = 2.0
DRAIN_SECONDS = 40.0


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[LocalSentinel]:
    setup = LocalSentinel(tmp_path / "sentinel").start()
    yield setup
    setup.stop()


def _ready(broker: Process) -> bool:
    try:
        return httpx.get(f"{broker.url}/health/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _eventually(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(0.1)


def _report(scenario: str, verdict: Verdict) -> None:
    line = verdict.summary(scenario)
    REPORTS.append(line)
    print(line)


def _sentinel_failover(sentinel: LocalSentinel, tmp_path: Path, wait_replicas: int) -> Verdict:
    env = broker_env(
        BROKER_REDIS_SENTINELS=sentinel.addresses,
        BROKER_REDIS_SENTINEL_MASTER=MASTER_NAME,
        BROKER_REDIS_WAIT_REPLICAS=str(wait_replicas),
        **FAST_RETRY,
    )
    broker = Process(env, tmp_path / "broker.log")
    try:
        listeners = [broker.declare(f"failover-{i}", "person") for i in range(2)]
        history = History()
        load = Load(history, lambda: [broker.url], listeners).start()
        time.sleep(UNDER_LOAD_SECONDS)
        old = sentinel.master_port()
        sentinel.node(old).kill()  # kill -9
        new = sentinel.wait_for_failover(old)
        # The broker follows the new master by itself.
        _eventually(lambda: _ready(broker), 15, "ready again on the new master")
        confirmed_before = len(history.confirmed)
        # The old master comes back (as a pod would) and the sentinels make it a replica.
        sentinel.node(old).start()
        # A sanity bound: the restarted node loads its data, is reconfigured, then syncs.
        sentinel.wait_for_replicas(sentinel.node(new), 1, seconds=90)
        time.sleep(UNDER_LOAD_SECONDS)
        load.stop_emitting()
        assert len(history.confirmed) > confirmed_before, history.reasons
        load.drain(listeners, DRAIN_SECONDS)
        load.stop()
        verdict = history.check(listeners)
        assert broker.stop() == 0, broker.output()
    finally:
        if broker.proc.poll() is None:
            broker.proc.kill()
    assert verdict.confirmed > 0
    return verdict


def test_with_wait_a_sentinel_failover_loses_no_confirmed_event(
    sentinel: LocalSentinel, tmp_path: Path
) -> None:
    verdict = _sentinel_failover(sentinel, tmp_path, wait_replicas=1)
    _report("sentinel failover, BROKER_REDIS_WAIT_REPLICAS=1", verdict)
    assert verdict.lost == {}


def test_without_wait_a_sentinel_failover_reports_what_it_lost(
    sentinel: LocalSentinel, tmp_path: Path
) -> None:
    """Asynchronous replication may drop the last writes: counted and shown, not asserted."""
    verdict = _sentinel_failover(sentinel, tmp_path, wait_replicas=0)
    _report("sentinel failover, BROKER_REDIS_WAIT_REPLICAS=0", verdict)


def _send(broker: Process, subject: str) -> dict[str, Any]:
    event = {"namespace": "mo", "routing_key": "person", "subject": subject, "priority": 1}
    body: dict[str, Any] = httpx.post(
        f"{broker.url}/graphql/v25",
        json={"query": clients.SEND, "variables": {"input": event}},
        timeout=30,
    ).json()
    return body


def test_a_full_redis_refuses_sends_cleanly_and_recovers_when_memory_is_freed(
    tmp_path: Path,
) -> None:
    with EmbeddedRedis(tmp_path / "redis") as server, SyncRedis(port=server.port) as admin:
        broker = Process(
            broker_env(BROKER_REDIS_URL=server.url, **FAST_RETRY), tmp_path / "broker.log"
        )
        try:
            listeners = [broker.declare(f"full-{i}", "person") for i in range(2)]
            history = History()
            for _ in range(10):
                subject = str(uuid.uuid4())
                assert _send(broker, subject) == {"data": {"event_send": True}}
                history.confirm(subject)
            # Redis reaches its maxmemory (a small one, noeviction: the default policy).
            admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) // 2)
            for subject in ("refused", "refused again"):
                assert _send(broker, subject)["errors"][0]["message"] == str(StoreFull())
            declare = {"input": {"namespace": "mo", "user_key": "late", "routing_key": "x"}}
            refused = httpx.post(
                f"{broker.url}/graphql/v25",
                json={"query": clients.DECLARE_LISTENER, "variables": declare},
                timeout=30,
            ).json()
            assert refused["errors"][0]["message"] == str(StoreFull())
            metrics = httpx.get(f"{broker.url}/metrics").text
            assert "broker_store_full_total 3.0" in metrics
            assert _ready(broker)  # full is not down: fetches and acknowledgements still work

            admin.config_set("maxmemory", 0)  # the operator frees memory
            load = Load(history, lambda: [broker.url], listeners, emitters=1).start()
            time.sleep(UNDER_LOAD_SECONDS)
            load.stop_emitting()
            load.drain(listeners, DRAIN_SECONDS)
            load.stop()
            verdict = history.check(listeners)
            _report("redis full (maxmemory, noeviction), then freed", verdict)
            assert verdict.lost == {}
            # Nothing of a refused send was stored: it never reaches anyone.
            fetched = {subject for x in listeners for subject in history.fetched[x]}
            assert not {"refused", "refused again"} & fetched
            assert broker.stop() == 0
        finally:
            if broker.proc.poll() is None:
                broker.proc.kill()


@pytest.fixture
def cluster_with_replicas(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path / "cluster", replicas=1).start()
    yield cluster
    cluster.stop()


def test_with_wait_a_cluster_master_failover_loses_no_confirmed_event(
    cluster_with_replicas: LocalCluster, tmp_path: Path
) -> None:
    cluster = cluster_with_replicas
    env = broker_env(
        BROKER_REDIS_URL=cluster.url,
        BROKER_REDIS_CLUSTER="true",
        BROKER_REDIS_WAIT_REPLICAS="1",
        **FAST_RETRY,
    )
    broker = Process(env, tmp_path / "broker.log")
    try:
        listeners = [broker.declare(f"cluster-{i}", "person") for i in range(2)]
        history = History()
        load = Load(history, lambda: [broker.url], listeners).start()
        time.sleep(UNDER_LOAD_SECONDS)
        # The master of the ingest stream every send goes to.
        keys = Keys("broker", Settings().ingest_shards)
        index = cluster.master_index_of(keys.ingest(keys.shard_of("mo", "person")))
        victim, replica = cluster.masters[index], cluster.replica_of(index)
        victim.kill()  # kill -9
        _eventually(lambda: cluster.role(replica) == "master", 30, "the replica takes over")
        _eventually(lambda: _ready(broker), 15, "ready again")
        # The old master comes back and joins as the new master's replica.
        victim.start()
        cluster.wait_for_replica_of(replica)
        confirmed_before = len(history.confirmed)
        time.sleep(UNDER_LOAD_SECONDS)
        load.stop_emitting()
        assert len(history.confirmed) > confirmed_before, history.reasons
        load.drain(listeners, DRAIN_SECONDS)
        load.stop()
        verdict = history.check(listeners)
        _report("cluster master failover, BROKER_REDIS_WAIT_REPLICAS=1", verdict)
        assert verdict.lost == {}
        assert broker.stop() == 0, broker.output()
    finally:
        if broker.proc.poll() is None:
            broker.proc.kill()


def test_a_broker_killed_during_fan_out_on_a_cluster_loses_nothing(
    redis_cluster: LocalCluster, tmp_path: Path
) -> None:
    env = broker_env(
        BROKER_REDIS_URL=redis_cluster.url,
        BROKER_REDIS_CLUSTER="true",
        BROKER_KEY_PREFIX=f"kill{uuid.uuid4().hex[:8]}",  # the session cluster is shared
        **FAST_RETRY,
    )
    first = Process(env, tmp_path / "first.log")
    second: Process | None = None
    try:
        # Several listeners: each ingest batch takes a while to fan out.
        listeners = [first.declare(f"kill-{i}", "person") for i in range(3)]
        history = History()
        subjects = [str(uuid.uuid4()) for _ in range(30)]
        with ThreadPoolExecutor(8) as pool:
            replies = pool.map(lambda subject: _send(first, subject), subjects)
            for subject, body in zip(subjects, replies, strict=True):
                if body == {"data": {"event_send": True}}:
                    history.confirm(subject)
        first.proc.kill()  # kill -9 while its fan-out works through the burst
        first.proc.wait()
        second = Process(env, tmp_path / "second.log")
        load = Load(history, lambda: [second.url], listeners, emitters=1).start()
        time.sleep(UNDER_LOAD_SECONDS)
        load.stop_emitting()
        load.drain(listeners, DRAIN_SECONDS)
        load.stop()
        verdict = history.check(listeners)
        taken_over = second.output().count("took over")
        _report(f"broker kill -9 during fan-out on a cluster ({taken_over} take-overs)", verdict)
        assert verdict.lost == {}
        assert second.stop() == 0
    finally:
        for broker in (first, second):
            if broker is not None and broker.proc.poll() is None:
                broker.proc.kill()
