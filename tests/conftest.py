"""Shared test configuration.

* hypothesis profiles (CI runs the 'ci' profile);
* live-kernel tests (marked ``live``: they mount tracefs, create trace instances, set
  ``kptr_restrict``, load BPF maps and kill captures) run only with
  ``PYVMALLOC_LIVE=1``; otherwise they are reported as skipped, with the reason.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Local runs ('dev') draw fresh examples and a fresh fuzz seed every run (the project
# is judged on inputs and seeds it never saw): a failure prints the falsifying example
# and the @reproduce_failure blob that replays it; ``--hypothesis-seed=N`` fixes the
# seed. The CI gate ('ci', CI set) is reproducible: derandomized examples and a fixed
# fuzz seed, so a landing never depends on the draw; PYVMALLOC_FUZZ_SEED overrides it.
settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
    print_blob=True,
)
settings.register_profile(
    "dev",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

#: The seed of the seeded fuzzers (tests/fuzz, the long API sequences): random per
#: local run, fixed under CI, unless PYVMALLOC_FUZZ_SEED is set. Shown in the header
#: and in every failure.
os.environ.setdefault(
    "PYVMALLOC_FUZZ_SEED", "20261201" if os.environ.get("CI") else str(random.randrange(1 << 32))
)


def pytest_report_header(config: pytest.Config) -> str:
    return f"pyvmalloc fuzz seed: PYVMALLOC_FUZZ_SEED={os.environ['PYVMALLOC_FUZZ_SEED']}"


LIVE_SKIP = (
    "live kernel test (tracefs, kptr_restrict, BPF): opt in with PYVMALLOC_LIVE=1, "
    "on a machine you may reconfigure"
)


@pytest.fixture
def fresh_python() -> Callable[..., str]:
    """``run(*args, pure=...)``: ``python ARGS`` in a fresh process, its stdout.

    The child imports the package this test imported (an editable src/ tree or an
    installed wheel), so both runs see the same build of the accelerator; ``pure``
    sets ``PYVMALLOC_PURE=1`` (the choice is made at import), and one OpenBLAS thread
    keeps the child's CPU time its own.
    """

    def run(*args: str, pure: bool, timeout: float = 600) -> str:
        import pyvmalloc

        env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
        env.pop("PYVMALLOC_PURE", None)
        if pure:
            env["PYVMALLOC_PURE"] = "1"
        src = str(Path(pyvmalloc.__file__).resolve().parents[1])
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        r = subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, env=env, check=True,
            timeout=timeout,
        )  # fmt: skip
        return r.stdout

    return run


def live_enabled() -> bool:
    """True when the live-kernel tests were asked for (``PYVMALLOC_LIVE=1``)."""
    return os.environ.get("PYVMALLOC_LIVE") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if live_enabled():
        return
    skip = pytest.mark.skip(reason=LIVE_SKIP)
    for item in items:
        if item.get_closest_marker("live") is not None:
            item.add_marker(skip)
