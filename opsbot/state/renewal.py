"""The background renewal a lease, a replica's liveness and a membership share.

Each keeps a document of this replica's in the store, renewed by a task (``_run``) until
``stop``; each is fenced by time: it counts as held only until ``_valid_until`` (monotonic).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable


class Renewal:
    """The renewing task of a document and how it ends: a subclass defines ``_run``, a loop
    that checks ``_stopping`` (not only the cancel: asyncio.timeout may swallow it, 3.11)."""

    _valid_until: float
    _task: asyncio.Task[None] | None
    _stopping: bool

    async def _run(self) -> None:
        raise NotImplementedError

    def _start_renewing(self, name: str) -> None:
        """Start the task ``name`` unless it runs (again after a ``_stop_renewing``)."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=name)

    async def _stop_renewing(self) -> bool:
        """End the task and drop the fence at once; False when it was not running."""
        task, self._task = self._task, None
        if task is None:
            return False
        self._stopping = True  # in case a cancellation is swallowed by a store call
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._valid_until = 0.0
        return True


async def give_back(call: Awaitable[object], log: logging.Logger, failed: str) -> None:
    """The last store call of a stop (a release, a delete), for 2 s at most; when it fails
    ``failed: <error>`` is logged, nothing raised: what it gives back lapses by itself."""
    try:
        async with asyncio.timeout(2.0):
            await call
    except Exception as exc:
        log.warning("%s: %s", failed, exc)
