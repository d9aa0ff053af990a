"""When a span batch is tried again: exponential backoff with jitter, a collector's Retry-After honoured up to a cap.

Pure arithmetic: the jitter's randomness is injected, as the ids' is (`gateway/context.py`), and the caller sleeps.
"""

from __future__ import annotations

import random
from collections.abc import Callable

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
# A collector's Retry-After is honoured up to this many seconds: longer, and the queue would fill behind one batch.
RETRY_AFTER_MAX = 30.0
# A pause is between half and all of its backoff, so that workers that failed together do not retry together.
JITTER_LOW = 0.5
JITTER_HIGH = 1.0
# Past this many doublings BACKOFF_FIRST is far above BACKOFF_MAX; the bound keeps 2**n a small number.
_MAX_DOUBLINGS = 32


class RetryPolicy:
    """``max_attempts`` tries per batch, the pauses between them doubling from BACKOFF_FIRST up to BACKOFF_MAX.

    ``jitter(low, high)`` picks the fraction of the backoff to wait (``random.uniform`` unless a test fixes it).
    """

    def __init__(self, max_attempts: int, jitter: Callable[[float, float], float] = random.uniform) -> None:
        self.max_attempts = max_attempts
        self._jitter = jitter

    def is_last(self, attempt: int) -> bool:
        """Whether attempt ``attempt`` (1 for the first) is the last one allowed."""
        return attempt >= self.max_attempts

    def pause(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the failed attempt ``attempt`` before the next one."""
        backoff = min(BACKOFF_FIRST * 2.0 ** min(attempt - 1, _MAX_DOUBLINGS), BACKOFF_MAX)
        pause = backoff * self._jitter(JITTER_LOW, JITTER_HIGH)
        if retry_after is not None:
            pause = max(pause, min(retry_after, RETRY_AFTER_MAX))
        return pause
