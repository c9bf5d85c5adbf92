"""`python -m benchmarks.variants NAME serve …`: the broker with one named piece swapped out.

The "earn it or delete it" phase runs the broker as shipped against the broker without
one piece, in the same run. A variant changes the piece in this process before the app
is built (uvicorn with `--workers 1` builds it here), so the product carries no switch.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from broker import cli


def no_plans() -> None:
    """Documents keep their cache, but no document gets a compiled plan (broker/http/plans.py)."""
    from broker.http import documents

    def never(*args: Any) -> None:
        return None

    setattr(documents, "compile_plan", never)  # noqa: B010 (typed: a stand-in of another type)


VARIANTS: dict[str, Callable[[], None]] = {
    "no-plans": no_plans,
}


def main() -> None:
    name, argv = sys.argv[1], sys.argv[2:]
    VARIANTS[name]()
    cli.main(argv)


if __name__ == "__main__":
    main()
