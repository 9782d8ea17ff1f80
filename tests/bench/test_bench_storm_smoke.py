"""bench/alert_storm.py at a tiny size (500 alerts over 6 s), so the script never rots.

Figures are not timed here (the machine is shared); asserted is what the bench relies on:
every alert stored and listed, no 429 from the fake Bot API with Telegram's limits on, the
group's pace held, the anchor measured in the same run.
"""

from __future__ import annotations

from pathlib import Path

from bench import alert_storm


def test_alert_storm_stores_and_lists_every_alert_without_a_429(tmp_path: Path) -> None:
    figures = alert_storm.measure(500, 0.1, tmp_path)
    assert figures.stored == figures.listed == 500
    assert figures.too_many == 0
    assert 0 < figures.group_max_60s <= 20
    assert 0 < figures.rss_idle_mb <= figures.rss_peak_mb
    assert figures.cpu_s > 0 and figures.anchor_cpu_s > 0
