"""FastRAMQPI's own environment (it pins pydantic 1), for tests that run it unchanged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-fastramqpi"
REQUIREMENTS = ROOT / "examples" / "fastramqpi_integration" / "requirements.txt"


def fastramqpi_python() -> Path:
    """The environment's python, created from the example's requirements if missing."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
            check=True,
            timeout=900,
        )
    return python
