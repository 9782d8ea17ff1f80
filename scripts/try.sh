#!/usr/bin/env bash
# Try opsbot on this machine in one command: a virtualenv in .venv (Debian's own python3 refuses
# `pip install` system-wide, PEP 668), opsbot installed into it, then its console on
# config/local.yaml (no token, no servers). Extra arguments go to `opsbot console`, e.g.
#   bash scripts/try.sh --as alice        or        echo /health | bash scripts/try.sh
# By hand on any Python >= 3.11 it is:
#   python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/opsbot console --config config/local.yaml
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
die() { printf 'scripts/try.sh: %s\n' "$*" >&2; exit 1; }

command -v "$PY" >/dev/null || die "$PY not found: apt-get install -y python3 (3.11 or newer)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "opsbot needs Python >= 3.11; $PY is $("$PY" -V 2>&1)"

stamp=.venv/.opsbot-installed
if [[ ! -x .venv/bin/python ]]; then
    if ! "$PY" -m venv .venv >/dev/null 2>&1; then
        rm -rf .venv
        # Debian/Ubuntu ship venv's pip separately
        [[ "$(id -u)" -eq 0 ]] || die "python3 -m venv failed; run: sudo apt-get install -y python3-venv"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv >&2
        "$PY" -m venv .venv
    fi
fi
# (re)install when the code changed since the last install (a `git pull`, an edit), unless the
# venv already runs this checkout's code (`pip install -e`, as scripts/test.sh does)
here="$PWD/opsbot/__init__.py"
used="$(.venv/bin/python -I -c 'import opsbot; print(opsbot.__file__)' 2>/dev/null || true)"
if [[ "$used" != "$here" ]] \
    && [[ ! -f $stamp || -n "$(find pyproject.toml opsbot -newer "$stamp" -print -quit)" ]]; then
    echo "installing opsbot into .venv (once; a minute the first time)" >&2
    .venv/bin/pip install --quiet --disable-pip-version-check . >&2
    touch "$stamp"
fi
exec .venv/bin/opsbot console --config config/local.yaml "$@"
