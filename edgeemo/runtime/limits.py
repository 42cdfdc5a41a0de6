"""The documented bounds on runtime arguments (sample rates, thread counts) and their one-line checks.

Every public entry point that takes a sample rate (streams, decoded files, raw signals) or a
thread count checks it here, so a forged WAV header or a typo cannot make the resampler hang
or allocate without bound.
"""

from __future__ import annotations

import math
import numbers

from edgeemo.errors import EdgeemoError

MIN_SAMPLE_RATE = 1_000  # Hz
MAX_SAMPLE_RATE = 1_000_000  # Hz
MAX_THREADS = 64


def check_sample_rate(rate: object, what: str = "sample rate") -> int:
    """``rate`` as an int Hz within [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE], else a one-line :class:`EdgeemoError`.

    Booleans, non-integral floats, NaN and infinities are refused.
    """
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise EdgeemoError(f"{what} must be a number of Hz, got {type(rate).__name__}")
    value = float(rate)
    if not math.isfinite(value) or value != int(value):
        raise EdgeemoError(f"{what} must be a whole number of Hz, got {rate!r}")
    if not MIN_SAMPLE_RATE <= value <= MAX_SAMPLE_RATE:
        raise EdgeemoError(f"{what} {int(value)} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
    return int(value)


def check_threads(threads: object) -> int:
    """``threads`` as an int within [1, MAX_THREADS], else a one-line :class:`EdgeemoError`."""
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral):
        raise EdgeemoError(f"threads must be a whole number, got {type(threads).__name__}")
    if not 1 <= int(threads) <= MAX_THREADS:
        raise EdgeemoError(f"threads {int(threads)} is outside 1..{MAX_THREADS}")
    return int(threads)
