"""A storm through a real Alertmanager and the webhook, opsbot (``opsbot run``) on SQLite and
on a real redis-server, posting to the fake Bot API with Telegram's limits on.

2,000 alerts over 3 s, half through Alertmanager in groups of 50, half one per POST, with
the bodies in hand capped at 1 KB (a real cap is 2 MB), so that any two at once are too many:
webhooks are answered 503 with Retry-After (~50 to the bench's senders, ~15 to Alertmanager),
both send them again, and at the end every alert is in the store and counted by /alerts, no
call drew a 429, and no minute had more than 20 calls to the alert chat.

The memory side: a replica's write cache keeps the newest WRITTEN_CACHE fingerprints and reads
back from the store one it forgot, so a repeat of an old alert still counts on.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import alert_storm
from opsbot.alerting import records
from opsbot.alerting.event import AlertEvent, Severity
from opsbot.alerting.records import AlertRecords
from opsbot.state.store.sqlite import SQLiteStore


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_a_storm_past_the_in_hand_cap_loses_nothing_and_keeps_the_pace(
    tmp_path: Path, store: str
) -> None:
    figures = alert_storm.measure(2000, 0.05, tmp_path, store, in_hand_bytes=1024)
    # the cap said 503 to the bench's senders and to Alertmanager, and both sent them again
    assert figures.busy_503 > 0
    assert figures.refused_busy > figures.busy_503
    assert figures.stored == 2000  # nothing lost
    assert figures.listed == 2000  # every one listable: /alerts counts them all
    assert figures.too_many == 0
    assert figures.group_max_60s <= 20


def _event(n: int) -> AlertEvent:
    return AlertEvent("webhook", f"fp{n}", "firing", Severity.warning, f"disk {n} full", None)


async def test_a_forgotten_write_is_read_back_and_its_count_goes_on(
    sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "WRITTEN_CACHE", 10)
    recorder = AlertRecords(sqlite_store, clock=lambda: 1_000.0)
    for n in range(30):
        assert await recorder.record([_event(n)], 1_000.0, [], False) is not None
    assert len(recorder._written) == 10  # the newest ten, not thirty
    again = await recorder.record([_event(0), _event(29)], 1_001.0, [], False)
    assert again is not None  # read back, not a failed commit retried fresh
    assert again["fp0"][1].count == 2 and again["fp29"][1].count == 2
    assert again["fp0"][0] is not None and again["fp0"][0].id == again["fp0"][1].id
