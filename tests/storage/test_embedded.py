"""One embedded server per data folder: a second one is refused, a dead one's lock is not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from broker.storage.embedded import DataDirInUse, EmbeddedRedis
from tests.processes import Process, broker_env

pytestmark = pytest.mark.real_redis


def test_a_second_server_on_the_same_folder_is_refused_naming_the_first(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "data") as first:
        with pytest.raises(DataDirInUse, match=first.url):
            EmbeddedRedis(tmp_path / "data").start()
        with EmbeddedRedis(tmp_path / "other"):  # another folder is free
            pass
    with EmbeddedRedis(tmp_path / "data"):  # stopped: the folder is free again
        pass


def test_a_second_broker_on_the_same_folder_refuses_and_a_killed_ones_lock_does_not_block(
    tmp_path: Path, processes: list[Process]
) -> None:
    env = broker_env(BROKER_DATA_DIR=str(tmp_path / "data"))
    first = Process(env, tmp_path / "first.log")
    processes.append(first)

    second = subprocess.run(
        [sys.executable, "-m", "broker", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode != 0
    assert "in use by another embedded server" in second.stderr
    assert f"process {first.proc.pid}" in second.stderr
    assert first.gql("query { me { actor { uuid } } }")  # the first one is untouched

    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait()
    # Its server stops when it notices its broker died; then the lock is gone with it.
    deadline = time.monotonic() + 20
    while True:
        try:
            third = Process(env, tmp_path / "third.log")
            break
        except AssertionError:
            assert time.monotonic() < deadline, "a killed broker's lock blocked the next start"
            time.sleep(0.5)
    processes.append(third)
    assert third.stop() == 0
