"""Services the admin installed: unit files in /etc/systemd/system, states where systemd runs.

Only the directory is listed (regular files: vendor units enabled there are symlinks into
/lib, and a masked unit is a symlink to /dev/null); no unit file is read. Templates
(``name@.service``) are left out: they need an instance to be operated.
"""

from __future__ import annotations

from opsbot.onboarding.findings import Findings, Unit
from opsbot.onboarding.probing import NOT_INSTALLED, denied, first_line, probe, why
from opsbot.reach.executors import Executor

UNIT_DIR = "/etc/systemd/system"


async def discover_units(executor: Executor, findings: Findings) -> None:
    listed = await probe(
        executor,
        [
            "find",
            UNIT_DIR,
            "-maxdepth",
            "1",
            "-type",
            "f",
            "-name",
            "*.service",
            "-printf",
            "%f\n",
        ],
    )
    if not listed.ok:
        if "no such file" in listed.stderr.lower():
            findings.notes.append(f"systemd: no {UNIT_DIR}")
        else:
            (findings.problems if denied(listed) else findings.notes).append(
                f"systemd: cannot list {UNIT_DIR}: {why(listed)}"
            )
        return
    names = sorted({n for n in listed.stdout.split() if n.endswith(".service") and "@." not in n})
    if not names:
        return
    states: dict[str, tuple[str, int | None]] = {}
    shown = await probe(
        executor, ["systemctl", "show", "--no-pager", "-p", "Id,ActiveState,MainPID", *names]
    )
    if shown.ok:
        states = _parse_show(shown.stdout)
    elif shown.exit_status in NOT_INSTALLED:
        findings.notes.append("systemd: no systemctl; units from their files only")
    else:
        findings.notes.append(
            f"systemd: systemctl does not answer ({first_line(shown.stderr) or why(shown)}); "
            "units from their files only"
        )
    for name in names:
        state, pid = states.get(name, (None, None))
        findings.units.append(Unit(unit=name, state=state, pid=pid))


def _parse_show(stdout: str) -> dict[str, tuple[str, int | None]]:
    """``systemctl show`` prints one block of KEY=VALUE lines per unit, blank-line separated."""
    states: dict[str, tuple[str, int | None]] = {}
    for block in stdout.split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in fields:
            pid = int(fields["MainPID"]) if fields.get("MainPID", "").isdigit() else 0
            states[fields["Id"]] = (fields.get("ActiveState", "unknown"), pid or None)
    return states
