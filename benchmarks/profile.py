"""The broker profiled (py-spy) under fetch+ack, and GraphQL's cost per document."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.client import ACK_DOC, SEND_DOC, TYPENAME_DOC, fetch_doc
from benchmarks.config import Config, Context
from benchmarks.environment import Env, commandstats
from benchmarks.load import closed_loop, graphql_cycle_ops
from benchmarks.report import Report

BUCKETS = [
    (
        "GraphQL parse (graphql/language/parser, lexer)",
        ("graphql/language/parser", "graphql/language/lexer"),
    ),
    ("GraphQL validate (graphql/validation)", ("graphql/validation/",)),
    ("GraphQL execute (graphql/execution)", ("graphql/execution/",)),
    ("Ariadne (ariadne/)", ("ariadne/",)),
    ("Starlette (starlette/)", ("starlette/",)),
    ("uvicorn / httptools", ("uvicorn/", "httptools")),
    ("redis-py (redis/)", ("redis/",)),
    ("JSON encode/decode (json/)", ("json/",)),
    # py-spy shortens file names to the package part: "checked (broker/http/gates.py:12)"
    ("broker code (broker/)", ("(broker/", "/broker/")),
    ("asyncio (event loop, tasks)", ("asyncio/",)),
]


def summarize_profile(raw: str, seconds: float, rate: int) -> str:
    total = 0
    self_fn: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    incl_bucket: Counter[str] = Counter()
    self_bucket: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [
            f for f in stack.split(";") if "(" in f and not f.startswith(("process ", "thread "))
        ]
        if not frames:
            continue
        total += count
        names = []
        for frame in frames:
            name = re.sub(r":\d+\)$", ")", frame)
            name = re.sub(r"\(/[^)]*site-packages/", "(", name)
            name = re.sub(r"\(/[^)]*/lib/python3\.\d+/", "(", name)
            name = re.sub(r"\(/work/main/", "(", name)
            names.append(name)
        self_fn[names[-1]] += count
        for name in set(names):
            incl_fn[name] += count
        hit = set()
        for label, parts in BUCKETS:
            if any(p in f for f in frames for p in parts):
                hit.add(label)
        for label in hit:
            incl_bucket[label] += count
        # self: the innermost frame that belongs to a component (visitor.py under validate
        # counts as validate; a socket send under uvicorn counts as uvicorn)
        for frame in reversed(frames):
            found = next((lb for lb, parts in BUCKETS if any(p in frame for p in parts)), None)
            if found is not None:
                self_bucket[found] += count
                break
        else:
            self_bucket["other (leaf elsewhere)"] += count
    if not total:
        return "(no samples)"
    busy = total / (seconds * rate)
    out = [
        f"{total} samples at {rate} Hz over {seconds:.0f} s = broker main thread on-CPU "
        f"≈ {100 * busy:.0f}% of the time (py-spy, idle excluded).",
        "",
        "By component (inclusive = any frame on the stack; "
        "self = innermost component on the stack):",
        "",
        "| component | inclusive | self |",
        "|---|---|---|",
    ]
    for label, _ in BUCKETS:
        inclusive, own = 100 * incl_bucket[label] / total, 100 * self_bucket[label] / total
        out.append(f"| {label} | {inclusive:.1f}% | {own:.1f}% |")
    out.append(f"| none of these | | {100 * self_bucket['other (leaf elsewhere)'] / total:.1f}% |")
    out += ["", "Top functions by self time:", "", "```"]
    for name, count in self_fn.most_common(15):
        out.append(f"{100 * count / total:5.1f}%  {name}")
    out += [
        "```",
        "",
        "Top functions by inclusive time (excluding the event-loop scaffolding):",
        "",
        "```",
    ]
    shown = 0
    for name, count in incl_fn.most_common(80):
        if re.search(
            r"\((asyncio/|uvloop|runpy|uvicorn/(main|server|_compat)|broker/(cli|__main__))", name
        ) or name.startswith(("<module>", "run (", "serve (", "main (")):
            continue
        out.append(f"{100 * count / total:5.1f}%  {name}")
        shown += 1
        if shown == 25:
            break
    out.append("```")
    return "\n".join(out)


def graphql_document_costs(rep: Report) -> str:
    """parse / validate / parse+validate-cached cost per document, in this process (same
    graphql-core as the broker, the broker's schema): what a per-document cache would save."""
    from ariadne import make_executable_schema
    from graphql import parse, validate

    from broker.http import resolvers
    from broker.http.schema import schema_text

    schema = make_executable_schema(schema_text(), *resolvers.BINDABLES)
    lines = [
        "| document | parse | validate (spec rules) | per request if cached by query text |",
        "|---|---|---|---|",
    ]
    cache: dict[str, Any] = {}
    for name, doc in (
        ("{ __typename }", TYPENAME_DOC),
        ("FetchEvent", fetch_doc()[0]),
        ("AcknowledgeEvent", ACK_DOC),
        ("SendEvent", SEND_DOC),
    ):
        n = 40
        t = time.perf_counter()
        for _ in range(n):
            node = parse(doc)
        t_parse = (time.perf_counter() - t) / n
        t = time.perf_counter()
        for _ in range(n):
            assert not validate(schema, node)
        t_validate = (time.perf_counter() - t) / n
        t = time.perf_counter()
        for _ in range(n * 50):
            hit = cache.get(doc)
            if hit is None:
                cache[doc] = hit = (parse(doc), [])
        t_cached = (time.perf_counter() - t) / (n * 50)
        lines.append(
            f"| {name} | {1e6 * t_parse:.0f} µs | {1e6 * t_validate:.0f} µs "
            f"| {1e6 * t_cached:.1f} µs |"
        )
    text = "\n".join(lines)
    rep.detail("GraphQL per-document cost in-process (same graphql-core, broker schema):\n" + text)
    return text


async def profile(env: Env, cfg: Config, rep: Report, main_listener: str) -> str:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(pyspy, os.X_OK):
        return "py-spy not installed (`pip install py-spy`): no profile."
    await env.top_up(main_listener, cfg.backlog, "prof")
    out = env.workdir / "profile.txt"
    rate = 100
    proc = await asyncio.create_subprocess_exec(
        pyspy,
        "record",
        "--pid",
        str(env.broker_pid),
        "--rate",
        str(rate),
        "--duration",
        str(int(cfg.profile_seconds)),
        "--format",
        "raw",
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(1.0)
    run = await closed_loop(
        env, 32, cfg.profile_seconds, cfg.max_ops, graphql_cycle_ops(env, main_listener), warmup=0
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    except TimeoutError:
        proc.kill()
        return "py-spy did not finish"
    if not out.exists():
        return f"py-spy failed: {err.decode()[-500:]}"
    stats = await commandstats(env)
    text = summarize_profile(out.read_text(), cfg.profile_seconds, rate)
    rep.detail(
        f"profiled phase: fetch+ack x32 {run.rate:,.0f} cycles/s under py-spy ({run.usage.pct()})"
    )
    del stats
    return text


NAME = "profile"


async def run(ctx: Context) -> None:
    text = await profile(ctx.env, ctx.cfg, ctx.report, ctx.main_listener)
    doc_costs = graphql_document_costs(ctx.report)
    ctx.profile_text = (
        text + "\n\nGraphQL cost per document, measured in the benchmark process with the "
        "broker's schema and graphql-core (no HTTP, no resolvers):\n\n" + doc_costs
    )
