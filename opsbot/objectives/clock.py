"""The objectives' one clock: what "now" is for recording, budgets, alerts and reports.

Read as ``clock.now()`` at each use, so that a test can move time (30 simulated days, a
simulated minute per real second) without waiting for it.
"""

from __future__ import annotations

import time


def now() -> float:
    return time.time()
