"""Promises the README makes: its commands are what CI runs, its settings table is complete."""

from __future__ import annotations

import re
from pathlib import Path

from broker.relay.settings import RelaySettings
from broker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command() -> None:
    commands = re.findall(r"```sh\n(.*?)\n```", README, re.S)
    test_command = next(c for c in commands if c.rstrip().endswith("pytest"))
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_readme_documents_every_setting() -> None:
    documented = set(re.findall(r"^\| `(BROKER_[A-Z0-9_]+)` \|", README, re.M))
    relay = {f"BROKER_RELAY_{name.upper()}" for name in RelaySettings.model_fields}
    assert documented == {f"BROKER_{name.upper()}" for name in Settings.model_fields} | relay
