"""What hostile GraphQL documents cost a real broker process (issue 10, point 3).

    python -m benchmarks.document_cost [--seconds 10]
    python -m benchmarks --only document_cost     # the same, as a phase (5 s with --quick)

Starts its own Valkey and `python -m broker serve` (default settings, so the default
document limits), then, in one run:

1. `/health/live` latency while idle (the baseline);
2. `/health/live` latency while 4 clients send the worst documents we could build under
   the limits, each with a fresh random comment so that none is answered from the document
   cache (target: p99 at most 2x idle + 5 ms);
3. the broker's CPU per document, for each worst document sent one at a time (target for
   the refused ones: at most 10 ms each).

Prints each figure beside its baseline. Timings on a shared machine are noisy: compare the
figures of one run with each other, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from graphql import get_introspection_query

from benchmarks.config import Context
from benchmarks.report import Row
from broker.storage.embedded import EmbeddedRedis, free_port

NAME = "hostile GraphQL documents: /health/live latency, CPU per document"

CLIENTS = 4
LOG_LEVEL = os.environ.get("DOCUMENT_COST_LOG_LEVEL", "WARNING")


# The worst documents under the default limits -----------------------------------------------

LISTENER = "uuid owner user_key routing_key"
BIG_ACTOR = (
    f"uuid event_listeners {{ {LISTENER} namespace {{ name owner public }} "
    "events { subject priority silenced } } "
    f"event_namespaces {{ name owner public listeners {{ {LISTENER} }} }}"
)


def worst_documents() -> dict[str, str]:
    """name → document: each the costliest of its kind we found (refused or not)."""
    me = "me { actor { uuid } }"
    doubling = [f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, 19)]
    wide = " ".join(f"c{j}: {me}" for j in range(20))
    chain = [f"fragment C{i} on Query {{ ...C{i - 1} ...C{i - 1} }}" for i in range(1, 20)]
    arguments = ", ".join(["limit: 1"] * 150)
    identical = [f"fragment H{i} on Query {{ me {{ actor {{ {BIG_ACTOR} }} }} }}" for i in range(3)]
    return {
        # The document: 420 `me{actor{uuid}}`, 7 KB; past the token limit.
        "overlapping fields x420 (issue)": "{ " + " ".join(["me{actor{uuid}}"] * 420) + " }",
        # As many tokens as allowed, in one wide repeated selection.
        "repeated fields at the token limit": "{ " + f"{me} " * 70 + "}",
        # 19 fragments doubling each other: 2**18 expanded selections.
        "fragment bomb": "\n".join(["{ ...F18 }", f"fragment F0 on Query {{ {me} }}", *doubling]),
        # One definition past the limit, each doubling a wide one.
        "fragment chain x20 of wide sets": "\n".join(
            ["{ ...C19 }", f"fragment C0 on Query {{ {wide} }}", *chain]
        ),
        "many arguments": f"{{ event_listeners({arguments}) {{ objects {{ uuid }} }} }}",
        "inline fragments nested deep": "{ " + "... on Query { " * 300 + "__typename" + " }" * 300,
        "long string literal": f'{{ event_listeners(filter: {{user_keys: ["{"x" * 8_000}"]}}) '
        "{ objects { uuid } } }",
        # Accepted by the cheap pass: validation's own worst cases under the limits.
        "3 identical fragments (accepted)": "\n".join(["{ ...H0 ...H1 ...H2 }", *identical]),
        "20 operations (accepted by the pass)": "\n".join(
            f"query Q{i} {{ a: {me} b: {me} }}" for i in range(20)
        ),
        "introspection (GraphiQL's, accepted)": get_introspection_query(
            True, True, True, True, True
        ),
    }


def fresh(document: str) -> str:
    """The document with a random comment: a text the document cache has never seen."""
    return f"{document}\n# {random.random()}"


# A minimal keep-alive HTTP/1.1 client: the load generator must cost little CPU itself ----


class Connection:
    def __init__(self, port: int) -> None:
        self.port = port

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: broker\r\nContent-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def graphql_body(document: str) -> bytes:
    return json.dumps({"query": document}).encode()


# The broker under test ----------------------------------------------------------------------


class Broker:
    def __init__(self, workdir: Path) -> None:
        self.redis = EmbeddedRedis(workdir / "redis", extra_args=("--appendonly", "no")).start()
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
        env.update(BROKER_REDIS_URL=self.redis.url, BROKER_LOG_LEVEL=LOG_LEVEL)
        self.log = open(workdir / "broker.log", "wb")  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", "broker", "serve", "--host", "127.0.0.1"]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )

    async def ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the broker exited; see its log")
            try:
                connection = await Connection(self.port).open()
                status, _ = await connection.request("GET", "/health/ready")
                connection.close()
                if status == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError("the broker did not get ready in 30 s")

    def cpu_seconds(self) -> float:
        """CPU time of the broker and of its child processes (it checks documents in one)."""
        return sum(_cpu_seconds(pid) for pid in _with_descendants(self.process.pid))

    def server_cpu_seconds(self) -> float:
        """CPU time of the server process alone, whose event loop answers every request."""
        return _cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        self.redis.stop()


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:  # ended meanwhile
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _with_descendants(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(FileNotFoundError):  # ended meanwhile
                pending.extend(int(child) for child in children.read_text().split())
    return found


# Measurements -------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def health_latencies(port: int, seconds: float) -> list[float]:
    """`/health/live` round trips (ms), one every 10 ms, for `seconds`."""
    connection = await Connection(port).open()
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        start = time.perf_counter()
        status, _ = await connection.request("GET", "/health/live")
        latencies.append((time.perf_counter() - start) * 1000)
        assert status == 200
        await asyncio.sleep(0.01)
    connection.close()
    return latencies


async def hostile_clients(port: int, documents: list[str], stop: asyncio.Event) -> int:
    """`CLIENTS` connections sending `documents` round-robin, fresh each time, until `stop`."""
    sent = 0

    async def client(offset: int) -> None:
        nonlocal sent
        connection = await Connection(port).open()
        index = offset
        while not stop.is_set():
            status, _ = await connection.request(
                "POST", "/graphql/v25", graphql_body(fresh(documents[index % len(documents)]))
            )
            assert status < 500, status
            sent += 1
            index += 1
        connection.close()

    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return sent


async def cpu_per_document(broker: Broker, document: str, count: int) -> tuple[float, float, str]:
    """The broker's CPU (ms) per request of `document` (fresh each time), in all and in the
    server process alone, and its answer."""
    connection = await Connection(broker.port).open()
    await connection.request("POST", "/graphql/v25", graphql_body(fresh(document)))  # warm
    before, server_before = broker.cpu_seconds(), broker.server_cpu_seconds()
    for _ in range(count):
        status, answer = await connection.request(
            "POST", "/graphql/v25", graphql_body(fresh(document))
        )
    used = broker.cpu_seconds() - before
    server = broker.server_cpu_seconds() - server_before
    connection.close()
    errors = json.loads(answer).get("errors") or [{"message": "(answered)"}]
    return used * 1000 / count, server * 1000 / count, f"{status} {errors[0]['message'][:70]}"


def within(value: float, baseline: float) -> bool:
    return value <= 2 * baseline + 5


async def measure(seconds: float) -> list[Row]:
    """Every figure of this module, against its same-run baseline, printed as it comes."""
    documents = worst_documents()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="document-cost-") as workdir:
        broker = Broker(Path(workdir))
        try:
            await broker.ready()
            print(f"broker pid {broker.process.pid}, {CLIENTS} hostile clients, {seconds:.0f} s")

            print("\nCPU per document (sent one at a time, each with a fresh comment):")
            control, _, _ = await cpu_per_document(broker, "{ me { actor { uuid } } }", 200)
            print(f"  {'a small valid query (control)':44s} {control:9.2f} ms")
            for name, document in documents.items():
                cost, server, answer = await cpu_per_document(broker, document, 40)
                refused = "accepted" not in name
                target = " (target <= 10 ms)" if refused else ""
                print(
                    f"  {name:44s} {cost:9.2f} ms (server process {server:6.2f} ms)"
                    f"  -> {answer}{target}",
                    flush=True,
                )
                rows.append(
                    Row(
                        f"broker CPU per fresh document: {name}",
                        cost,
                        "ms",
                        control,
                        "a small valid query",
                        "<= 10 ms" if refused else "",
                        (cost <= 10) if refused else None,
                    )
                )

            idle = await health_latencies(broker.port, seconds)
            loads = {
                "all worst documents": list(documents.values()),
                "all but the introspection query": [
                    d for n, d in documents.items() if "introspection" not in n
                ],
                "the refused ones only": [d for n, d in documents.items() if "accepted" not in n],
            }
            loaded: dict[str, list[float]] = {}
            rates: dict[str, float] = {}
            for load_name, sent_documents in loads.items():
                stop = asyncio.Event()
                load = asyncio.create_task(hostile_clients(broker.port, sent_documents, stop))
                await asyncio.sleep(0.5)
                cpu_before = broker.cpu_seconds()
                loaded[load_name] = await health_latencies(broker.port, seconds)
                busy = (broker.cpu_seconds() - cpu_before) / seconds
                stop.set()
                rates[load_name] = await load / seconds
                print(f"  {load_name}: {rates[load_name]:.0f} requests/s, CPU busy {busy:.0%}")
        finally:
            broker.stop()

    print(f"\n/health/live (ms; {len(idle)} idle probes):")
    for q in (0.5, 0.99):
        for load_name, latencies in loaded.items():
            value, baseline = percentile(latencies, q), percentile(idle, q)
            row = Row(
                f"/health/live p{q * 100:.0f} under {CLIENTS} clients sending {load_name}",
                value,
                "ms",
                baseline,
                "idle",
                "<= 2x + 5 ms",
                within(value, baseline),
            )
            verdict = "meets target" if row.met else "MISSES target"
            print(f"  {row.figure:72s} {value:8.2f} ms  idle {baseline:8.2f} ms  {verdict}")
            rows.append(row)
    return rows


async def run(ctx: Context) -> None:
    """The phase of `python -m benchmarks`: its own Valkey and broker, default settings."""
    for row in await measure(5.0 if ctx.cfg.quick else 10.0):
        ctx.report.add(row)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    asyncio.run(measure(parser.parse_args().seconds))
