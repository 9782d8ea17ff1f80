"""Slots for what a fan-out must not do all at once, and clocks that stop while one waits.

A /health over a fleet starts a thousand checks together. Left alone, they would start a
thousand SSH handshakes (each a burst of crypto on the event loop and a fork on the host) and
a thousand HTTP requests at the same moment; capped, the machine does the same work in fewer,
shorter bursts and no check starves. The caps are ``Slots``:

* ``HANDSHAKES``: SSH handshakes in progress (64);
* ``SESSION_OPENS``: SSH sessions being opened on pooled connections (128); the command then
  runs without holding a slot;
* ``HTTP_CHECKS``: HTTP checks (and metric and bot checks) in flight (64).

Waiting for a slot is opsbot's own queueing, not the target being slow: a ``Clock`` (a
check's deadline and latency, a target's budget, a command's timeout) stops while the task it
belongs to waits for a slot. Clocks live in a context variable, so a wait pauses the clocks
of the task that waits (and those it inherited from the task that started it), no one else's.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import weakref
from types import TracebackType

#: The clocks of the running task, innermost last.
_CLOCKS: contextvars.ContextVar[tuple[Clock, ...]] = contextvars.ContextVar(
    "opsbot_clocks", default=()
)


class Clock:
    """When something started, less the time its task spent waiting for slots; with a
    deadline (an ``asyncio.Timeout``), the deadline is held off while it waits and moves on
    by the time waited."""

    __slots__ = ("_deadline", "_held", "started")

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._deadline: asyncio.Timeout | None = None
        self._held: float | None = None  # the deadline's time while a wait holds it off

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def hold_off(self) -> None:
        """A wait begins: the deadline cannot expire meanwhile."""
        deadline = self._deadline
        if deadline is not None and not deadline.expired() and deadline.when() is not None:
            self._held = deadline.when()
            deadline.reschedule(None)

    def resume(self, waited: float) -> None:
        """The wait is over after ``waited`` seconds: left off the clock and the deadline."""
        self.started += waited
        held, self._held = self._held, None
        if held is not None and self._deadline is not None:
            self._deadline.reschedule(held + waited)


class clock:  # lower case: used as a function, ``with clock() as spent``
    """A clock for the code inside: ``elapsed()`` leaves out its slot waits.

    Plain classes rather than generator-based context managers, here and below: a fleet's
    /health enters several per check, a thousand checks a round."""

    __slots__ = ("_made", "_token")

    def __enter__(self) -> Clock:
        self._made = Clock()
        self._token = _CLOCKS.set((*_CLOCKS.get(), self._made))
        return self._made

    def __exit__(self, *exc: object) -> None:
        _CLOCKS.reset(self._token)


class deadline:  # lower case: used as a function
    """``asyncio.timeout(seconds)`` whose clock stops while the code inside waits for a slot
    (None: no deadline, the clock alone). Raises TimeoutError like asyncio.timeout."""

    __slots__ = ("_clock", "_timeout")

    def __init__(self, seconds: float | None) -> None:
        self._clock = clock()
        self._timeout = asyncio.timeout(seconds)

    async def __aenter__(self) -> Clock:
        made = self._clock.__enter__()
        made._deadline = await self._timeout.__aenter__()
        return made

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._timeout.__aexit__(kind, exc, tb)  # raises TimeoutError once expired
        finally:
            self._clock.__exit__()


class Slots:
    """At most ``limit`` holders at once, per event loop; a wait pauses the waiter's clocks."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self._semaphores: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Semaphore
        ] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"Slots({self.limit}, {self.what!r})"

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        semaphore = self._semaphores.get(loop)
        if semaphore is None:
            semaphore = self._semaphores[loop] = asyncio.Semaphore(self.limit)
        return semaphore

    def hold(self) -> waited:
        """``async with slots.hold():`` one slot, for the code inside."""
        return waited(self._semaphore())


class waited:  # lower case: used as a function
    """Hold ``semaphore``; the time spent waiting for it is left off the task's clocks."""

    __slots__ = ("_semaphore",)

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self._semaphore = semaphore

    async def __aenter__(self) -> None:
        semaphore = self._semaphore
        if not semaphore.locked():
            await semaphore.acquire()  # at once
            return
        clocks = _CLOCKS.get()
        for each in clocks:
            each.hold_off()
        started = time.monotonic()
        try:
            await semaphore.acquire()
        finally:
            waited_for = time.monotonic() - started
            for each in clocks:
                each.resume(waited_for)

    async def __aexit__(self, *exc: object) -> None:
        self._semaphore.release()


#: SSH handshakes in progress at once (each is a burst of crypto and, on the host, a fork).
HANDSHAKES = Slots(64, "SSH handshakes")
#: SSH sessions being opened at once on pooled connections (a command runs without a slot).
SESSION_OPENS = Slots(128, "SSH session opens")
#: HTTP, metric and bot-token checks in flight at once.
HTTP_CHECKS = Slots(64, "HTTP checks")
