"""Shared test configuration.

* hypothesis profiles (CI runs the 'ci' profile);
* live-kernel tests (marked ``live``: they mount tracefs, create trace instances, set
  ``kptr_restrict``, load BPF maps and kill captures) run only with
  ``PYVMALLOC_LIVE=1``; otherwise they are reported as skipped, with the reason.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.register_profile(
    "dev", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

LIVE_SKIP = (
    "live kernel test (tracefs, kptr_restrict, BPF): opt in with PYVMALLOC_LIVE=1, "
    "on a machine you may reconfigure"
)


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
