"""``opsbot discover`` where systemd runs: each unit's state and main process from
``systemctl show``, and the port that process listens on becomes the unit's check.

No systemd runs as PID 1 on the test machine, so ``systemctl`` is a stand-in first on the lab
user's PATH (as ``kubectl`` is in ``lab_host.py``): it answers only the one question discovery
asks, ``systemctl show --no-pager -p Id,ActiveState,MainPID UNIT…``, in systemd's format (a
block of KEY=VALUE lines per unit, blank-line separated; ``inactive``/0 for a unit it does not
know). Everything else is real: the unit files in /etc/systemd/system, the process (a Python
HTTP server run as the lab user), ``ss -ltnp`` over the lab's sshd, the HTTP question.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.factories import ssh_endpoint
from tests.lab.ports import free_port, wait_until
from tests.lab.sshd import SSHServer
from tests.onboarding.test_discover_lab import discover, drafted

UNIT_DIR = Path("/etc/systemd/system")

SYSTEMCTL = r'''#!/usr/bin/python3
"""systemctl show --no-pager -p Id,ActiveState,MainPID UNIT... (no systemd runs here)."""
import json, sys
if sys.argv[1:5] != ["show", "--no-pager", "-p", "Id,ActiveState,MainPID"]:
    sys.exit("the stand-in only knows: show --no-pager -p Id,ActiveState,MainPID UNIT...")
states = json.load(open(STATES))
blocks = []
for unit in sys.argv[5:]:
    state, pid = states.get(unit, ["inactive", 0])
    blocks.append(f"MainPID={pid}\nId={unit}\nActiveState={state}\n")
print("\n".join(blocks), end="")
'''


@dataclass(frozen=True)
class Units:
    serving: str  # active, its main process listens on ``port``
    failed: str
    port: int


def _listening_pid(port: int) -> int | None:
    shown = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True,
                           text=True, check=False).stdout  # fmt: skip
    found = re.search(r"pid=(\d+)", shown)
    return int(found.group(1)) if found else None


@pytest.fixture(scope="module")
def units(sshd_server: SSHServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Units]:
    tag = os.getpid()
    made = Units(f"opsbot-sd-ledger-{tag}.service", f"opsbot-sd-mailer-{tag}.service",
                 free_port())  # fmt: skip
    lab = pwd.getpwnam(sshd_server.username)
    served = Path(lab.pw_dir) / f"served-{tag}"  # the lab user's own: it serves it
    served.mkdir(exist_ok=True)
    (served / "index.html").write_text("ok\n")
    os.chown(served, lab.pw_uid, lab.pw_gid)
    log = tmp_path_factory.mktemp("served-log") / "http.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            ["runuser", "-u", sshd_server.username, "--", "/usr/bin/python3", "-m",
             "http.server", "--bind", "127.0.0.1", "--directory", str(served), str(made.port)],
            stdout=out, stderr=subprocess.STDOUT, cwd=lab.pw_dir,
        )  # fmt: skip
    states = sshd_server.bin_dir / "systemctl-states.json"
    systemctl = sshd_server.bin_dir / "systemctl"
    try:
        wait_until(lambda: _listening_pid(made.port) is not None, what="the unit's server",
                   log=log, proc=server)  # fmt: skip
        for unit in (made.serving, made.failed):
            (UNIT_DIR / unit).write_text("[Service]\nExecStart=/bin/true\n")
        states.write_text(json.dumps({
            made.serving: ["active", _listening_pid(made.port)], made.failed: ["failed", 0],
        }))  # fmt: skip
        systemctl.write_text(SYSTEMCTL.replace("STATES", repr(str(states))))
        systemctl.chmod(0o755)
        yield made
    finally:
        systemctl.unlink(missing_ok=True)
        states.unlink(missing_ok=True)
        for unit in (made.serving, made.failed):
            (UNIT_DIR / unit).unlink(missing_ok=True)
        server.terminate()
        server.wait(timeout=10)
        (served / "index.html").unlink(missing_ok=True)
        served.rmdir()


def test_units_get_their_state_and_the_port_their_main_process_listens_on(
    units: Units, sshd_server: SSHServer, tmp_path: Path
) -> None:
    config = tmp_path / "opsbot.yaml"
    config.write_text(json.dumps({"endpoints": {"lab": ssh_endpoint(sshd_server)}}))
    done = discover("lab", "--config", str(config), "--timeout", "15")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "systemctl does not answer" not in done.stderr  # it answered
    draft = drafted(done.stdout, tmp_path)
    serving, failed = (u.removesuffix(".service") for u in (units.serving, units.failed))
    assert draft["targets"][serving] == {
        "kind": "systemd", "endpoint": "lab", "unit": units.serving,
        # index.html answers / (the first of /health, /healthz, / below 400)
        "checks": [{"type": "http", "url": f"http://127.0.0.1:{units.port}/"}],
    }  # fmt: skip
    assert draft["targets"][failed] == {"kind": "systemd", "endpoint": "lab", "unit": units.failed}
    assert f"# from lab: /etc/systemd/system/{units.serving} (active)" in done.stdout
    assert f"# from lab: /etc/systemd/system/{units.failed} (failed)" in done.stdout
    assert f"port {units.port}" not in " ".join(
        line for line in done.stderr.splitlines() if "not drafted" in line
    )  # the unit owns its port: not listed as a stray listener
