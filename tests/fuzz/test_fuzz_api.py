"""Hostile whole-API sequences (tests/fuzz/chaos_api.py) in this build, under
hypothesis, and the accelerated build against ``PYVMALLOC_PURE=1`` call by call.

The seed is random per run (``PYVMALLOC_FUZZ_SEED``, in pytest's header); a failure
names the seed, the run and the step. ``PYVMALLOC_FUZZ_EXAMPLES=N`` runs N sequences
(and N hypothesis examples) instead of the few CI can afford.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("chaos_api", _HERE / "chaos_api.py")
assert _spec is not None and _spec.loader is not None
chaos = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("chaos_api", chaos)
_spec.loader.exec_module(chaos)

SEED = int(os.environ.get("PYVMALLOC_FUZZ_SEED") or random.randrange(1 << 32))
EXAMPLES = int(os.environ.get("PYVMALLOC_FUZZ_EXAMPLES", "0"))


def test_hostile_api_sequences() -> None:
    """Every profile, strict or not: no escaping exception, check() after each call."""
    for label, rng, profile, strict, steps in chaos.plan(SEED, EXAMPLES or 8):
        try:
            chaos.run(rng, profile, strict, steps, label=label)
        except chaos.ChaosFailure as e:
            raise AssertionError(f"PYVMALLOC_FUZZ_SEED={SEED} {e}") from e


@settings(
    max_examples=EXAMPLES or 20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    rng=st.randoms(use_true_random=False),
    profile=st.sampled_from(["4.19", "5.4", "6.18"]),
    strict=st.booleans(),
)
def test_hostile_api_sequences_hypothesis(rng: random.Random, profile: str, strict: bool) -> None:
    """The same under hypothesis (fresh examples each run; a failure prints the
    example and the blob that replays it)."""
    chaos.run(rng, profile, strict, 60, full_every=20)


def test_accelerated_and_pure_agree_on_hostile_sequences(fresh_python: Callable[..., str]) -> None:
    """Call by call (result, error text, dmesg, final /proc views): the C whole
    operations decline exactly where the reference behaves differently."""
    from pyvmalloc import accelerator

    if accelerator().startswith("pure"):
        pytest.skip("the accelerator is not built")
    runs = str(EXAMPLES or 4)
    script = str(_HERE / "chaos_api.py")
    fast = fresh_python(script, str(SEED), runs, pure=False).splitlines()
    ref = fresh_python(script, str(SEED), runs, pure=True).splitlines()
    for i, (a, b) in enumerate(zip(fast, ref, strict=False)):
        assert a == b, f"PYVMALLOC_FUZZ_SEED={SEED}, output line {i + 1}:\n accel: {a}\n pure:  {b}"
    assert len(fast) == len(ref)
