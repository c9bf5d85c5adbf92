"""The checker process: what it answers, and how it shares itself between callers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from graphql import GraphQLError, parse, validate

from broker.http.checker import Checker, Checks, Outcome, check
from broker.settings import Settings

CHECKS = Checks.of(Settings(), seed=False)


@pytest.mark.parametrize(
    "text", ["{ __typename", "{ nope }", "{ me { actor { uuid } } }", "query($x: Int) { me }"]
)
def test_refusals_come_back_located_as_graphql_core_words_them(text: str) -> None:
    outcome = check(CHECKS, text)
    try:
        expected = validate(CHECKS.schema(), parse(text), None)
    except GraphQLError as error:
        assert outcome.unparsed is not None
        assert outcome.unparsed.error(text).formatted == error.formatted
        return
    assert [r.error(text).formatted for r in outcome.invalid] == [e.formatted for e in expected]


async def test_one_callers_burst_does_not_queue_in_front_of_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checker = Checker(per_caller=2)
    running: Counter[str] = Counter()
    most: Counter[str] = Counter()
    started: list[str] = []
    release = asyncio.Event()

    async def run(checks: Checks, text: str) -> Outcome:
        caller = text.split(":")[0]
        started.append(text)
        running[caller] += 1
        most[caller] = max(most[caller], running[caller])
        await release.wait()
        running[caller] -= 1
        return Outcome(None)

    monkeypatch.setattr(checker, "_run", run)
    burst = [asyncio.create_task(checker.check(CHECKS, f"a:{i}", "a")) for i in range(10)]
    await asyncio.sleep(0.01)
    other = asyncio.create_task(checker.check(CHECKS, "b:0", "b"))
    await asyncio.sleep(0.01)
    assert started == ["a:0", "a:1", "b:0"]
    release.set()
    await asyncio.gather(*burst, other)
    assert most == {"a": 2, "b": 1}
    assert len(started) == 11
    assert checker.slots.callers == 0  # nothing kept for callers that are gone


async def test_a_child_that_died_is_replaced() -> None:
    checker = Checker()
    assert (await checker.check(CHECKS, "{ __typename }", "a")).unparsed is None
    os.kill(await checker.pid(), signal.SIGKILL)
    outcome = await checker.check(CHECKS, "{ nope }", "a")
    assert [r.message for r in outcome.invalid] == ["Cannot query field 'nope' on type 'Query'."]
    assert not checker.on_thread


UNGUARDED = """
import asyncio
from broker.http.checker import CHECKER, Checks
from broker.settings import Settings

outcome = asyncio.run(CHECKER.check(Checks.of(Settings(), False), "{ nope }", "a"))
print(CHECKER.on_thread, [refusal.message for refusal in outcome.invalid])
"""


def test_a_server_started_from_an_unguarded_script_checks_on_a_thread(tmp_path: Path) -> None:
    # A spawned child runs the main script again, here without `if __name__ == ...`.
    script = tmp_path / "serve.py"
    script.write_text(UNGUARDED)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    last = done.stdout.strip().splitlines()[-1]
    assert last == "True [\"Cannot query field 'nope' on type 'Query'.\"]", done.stderr[-2000:]
    assert "checking on a thread instead" in done.stderr


SERVER = """
import asyncio, sys
from broker.http.checker import CHECKER, Checks
from broker.settings import Settings

async def main():
    await CHECKER.check(Checks.of(Settings(), False), "{ __typename }", "a")
    print(await CHECKER.pid(), flush=True)
    await asyncio.sleep(600)

if __name__ == "__main__":
    asyncio.run(main())
"""


@pytest.mark.slow
def test_the_child_ends_when_the_server_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "serve.py"
    script.write_text(SERVER)
    server = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert server.stdout is not None
    with server.stdout:
        child = int(server.stdout.readline())
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    for _ in range(200):  # a sanity bound: it looks for its parent once a second
        if not Path(f"/proc/{child}").exists() or "Z" in _state(child):
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the checker process outlived the server")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
