"""The fan-out and logs benchmarks run end to end at a tiny size (the CI smoke).

Each is the documented command with a small N and only the anchors that need nothing beyond
the dev install (``--anchors bare``); the full runs (N=100, parallel-ssh, ansible-core, a
1 GB file) are in bench/RESULTS.md, not in the test budget.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench(script: str, *args: str, results: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args, "--results", str(results)],
        capture_output=True, text=True, timeout=240, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    text = results.read_text()
    assert done.stdout.strip() in text  # what it printed is what it appended
    return text


def test_health_fanout_runs_opsbot_beside_the_floor(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## someone else's section\nkept\n")
    text = _bench(
        "health_fanout.py", "--hosts", "3", "--rounds", "2", "--cold-rounds", "1",
        "--anchors", "bare", results=results,
    )  # fmt: skip
    assert text.startswith("# Benchmark results\n\n## someone else's section\nkept\n")
    assert "## health_fanout · " in text and "3 SSH hosts" in text
    assert re.search(r"\d+ × .+, Python 3\.\d+\.\d+, asyncssh \d", text)  # the machine
    row = re.search(
        r"\| opsbot `/health` via the fake Bot API \| ([\d.]+) s \(\*\*([\d.]+)×", text
    )
    assert row is not None and float(row[1]) > 0 and float(row[2]) > 0
    assert re.search(r"\| bare asyncssh \(floor\).* \| [\d.]+ s \| [\d.]+ s \|", text)
    # One handshake per host cold, none warm: opsbot pooled its connections.
    assert "opsbot handshakes: [3] per cold round, 0 over the warm rounds" in text
    assert "parallel-ssh" not in text and "ansible" not in text  # --anchors bare


def test_health_fanout_on_a_fleet_lab(tmp_path: Path) -> None:
    """--lab fleet: 18 hosts on two sshd (16 + 2 loopback addresses), one login per host."""
    results = tmp_path / "RESULTS.md"
    text = _bench(
        "health_fanout.py", "--hosts", "18", "--rounds", "1", "--cold-rounds", "1",
        "--anchors", "bare", "--lab", "fleet", results=results,
    )  # fmt: skip
    assert "18 SSH hosts" in text and "--lab fleet`" in text
    assert "opsbot handshakes: [18] per cold round, 0 over the warm rounds" in text


def test_logs_big_runs_opsbot_beside_ssh_tail(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    text = _bench("logs_big.py", "--size-mb", "8", "--rounds", "1", results=results)
    assert "## logs_big · " in text and "`/logs big 200`" in text
    row = re.search(r"\| opsbot `/logs big 200` .* \| (\d+) ms .* RSS (\d+) MB", text)
    assert row is not None and int(row[2]) > 20
    assert re.search(r"\| `ssh host tail -n 200 FILE` .* \| \d+ ms \|", text)
