"""The image builds the broker package alone and runs it unprivileged."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    parsed = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            parsed.append((instruction.upper(), arguments.strip()))
    return parsed


def final_stage() -> list[tuple[str, str]]:
    parsed = instructions()
    last_from = max(i for i, (instruction, _) in enumerate(parsed) if instruction == "FROM")
    return parsed[last_from:]


def arguments_of(instruction: str, stage: list[tuple[str, str]]) -> list[str]:
    return [arguments for name, arguments in stage if name == instruction]


def test_every_stage_starts_from_slim_python_3_11() -> None:
    bases = arguments_of("FROM", instructions())

    assert bases
    for base in bases:
        assert re.match(r"python:3\.11[.\d]*-slim", base), base


def test_image_runs_as_a_numeric_non_root_user() -> None:
    user = arguments_of("USER", final_stage())[-1]

    assert re.fullmatch(r"\d+(:\d+)?", user)
    assert user.split(":")[0] == "10001"


def test_entrypoint_is_the_broker_serving_on_8000() -> None:
    stage = final_stage()

    assert json.loads(arguments_of("ENTRYPOINT", stage)[-1]) == ["broker"]
    assert json.loads(arguments_of("CMD", stage)[-1]) == [
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ]
    assert arguments_of("EXPOSE", stage) == ["8000"]


def test_image_defaults_to_json_logs_and_oidc() -> None:
    environment = " ".join(arguments_of("ENV", final_stage()))

    assert "BROKER_LOG_FORMAT=json" in environment
    assert "BROKER_AUTH=oidc" in environment


def test_only_the_package_is_installed_without_dev_extras() -> None:
    installs = [run for run in arguments_of("RUN", instructions()) if "pip install" in run]

    assert installs == ["pip install ."]


def test_build_copies_everything_the_wheel_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {"pyproject.toml", project["project"]["readme"]}
    needed |= set(wheel["packages"]) | set(wheel["force-include"])
    copied = set()
    for arguments in arguments_of("COPY", instructions()):
        if not arguments.startswith("--from"):
            copied |= {source.rstrip("/") for source in arguments.split()[:-1]}

    assert needed <= copied


@pytest.mark.parametrize("pattern", [".git", "tests", ".venv", "venv", "**/__pycache__"])
def test_dockerignore_keeps_the_context_small(pattern: str) -> None:
    patterns = (ROOT / ".dockerignore").read_text().splitlines()

    assert pattern in patterns
