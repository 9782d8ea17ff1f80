#!/usr/bin/env bash
# Try opsbot on this machine in one command: a virtualenv in .venv (Debian's own python3 refuses
# `pip install` system-wide, PEP 668), opsbot installed into it, then its console on
# config/local.yaml (no token, no servers). The dependencies are the lock's exact versions
# (requirements/runtime.txt, hashes checked), as in the image. Extra arguments go to
# `opsbot console`, e.g.
#   bash scripts/try.sh --as alice        or        echo /health | bash scripts/try.sh
# By hand on any Python >= 3.11 it is:
#   python3 -m venv .venv && .venv/bin/pip install -r requirements/runtime.txt && .venv/bin/pip install --no-deps . && .venv/bin/opsbot console --config config/local.yaml
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
die() { printf 'scripts/try.sh: %s\n' "$*" >&2; exit 1; }

command -v "$PY" >/dev/null || die "$PY not found: apt-get install -y python3 (3.11 or newer)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "opsbot needs Python >= 3.11; $PY is $("$PY" -V 2>&1)"

lock=requirements/runtime.txt
want="$(sha256sum "$lock" | cut -d' ' -f1) $("$PY" -c 'import sys; print(sys.version.split()[0])')"
stamp=.venv/.opsbot-installed
# a venv that scripts/test.sh made (the dev lock, this checkout installed editable) runs as it is
here="$PWD/opsbot/__init__.py"
used="$(.venv/bin/python -I -c 'import opsbot; print(opsbot.__file__)' 2>/dev/null || true)"
if [[ "$used" != "$here" || ! -f .venv/.opsbot-dev-lock ]]; then
    # the dependencies, made anew whenever the lock (or the python) changed
    if [[ ! -x .venv/bin/python || "$(cat .venv/.opsbot-runtime-lock 2>/dev/null)" != "$want" ]]; then
        rm -rf .venv
        if ! "$PY" -m venv .venv >/dev/null 2>&1; then
            rm -rf .venv
            # Debian/Ubuntu ship venv's pip separately
            [[ "$(id -u)" -eq 0 ]] || die "python3 -m venv failed; run: sudo apt-get install -y python3-venv"
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv >&2
            "$PY" -m venv .venv
        fi
        echo "installing opsbot into .venv (once; a minute the first time)" >&2
        .venv/bin/pip install --quiet --disable-pip-version-check --require-hashes -r "$lock" >&2
        echo "$want" > .venv/.opsbot-runtime-lock
    fi
    # opsbot itself, again whenever the code changed since (a `git pull`, an edit); built by the
    # locked setuptools, so nothing unpinned is fetched
    if [[ ! -f $stamp || -n "$(find pyproject.toml opsbot -newer "$stamp" -print -quit)" ]]; then
        .venv/bin/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation . >&2
        touch "$stamp"
    fi
fi
exec .venv/bin/opsbot console --config config/local.yaml "$@"
