#!/usr/bin/env bash
# The project's one test command on a fresh Debian 12 machine:
# system packages for the real-component lab, a .venv holding exactly the lock (requirements/dev.txt)
# with the package in editable mode, then ruff, mypy, pytest.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k lab -x`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

banner() { printf '\n==> %s\n' "$*"; }
die() { printf 'scripts/test.sh: %s\n' "$*" >&2; exit 1; }

APT_PACKAGES=(redis-server openssh-server docker.io busybox-static postgresql sqlite3
              prometheus-alertmanager ca-certificates chromium chromium-driver
              docker-compose systemd python3 iproute2 docker-registry)

PM2_VERSION=7.0.4  # the pm2 daemon of tests/onboarding, pinned like the Python lock

missing_tools() {
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    [[ -x /usr/sbin/sshd ]] || missing+=(sshd)
    command -v ssh-keygen >/dev/null || missing+=(ssh-keygen)
    command -v ssh >/dev/null || missing+=(ssh)
    # network namespaces for the bastion test (tests/lab/netns.py)
    command -v ip >/dev/null || [[ -x /usr/sbin/ip ]] || missing+=(ip)
    command -v dockerd >/dev/null || missing+=(dockerd)
    command -v docker-init >/dev/null || missing+=(docker-init)
    # the lab copies busybox into an image, so it must be the static build
    dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' \
        || missing+=(busybox-static)
    compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || missing+=(pg_ctl)
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(initdb)
    command -v sqlite3 >/dev/null || missing+=(sqlite3)
    command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
    [[ -x /usr/bin/chromium ]] || missing+=(chromium)  # the status page's browser test
    [[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
    # tests/deploy/test_deploy.py: compose files and the systemd unit checked by their own tools
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    # tests/updates: update notices ask a real Registry v2 (Debian's distribution registry)
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    command -v systemd-analyze >/dev/null || missing+=(systemd-analyze)
    # the kubectl stand-in of tests/actions/test_k8s_revisions.py runs as the lab user, via ssh
    [[ -x /usr/bin/python3 ]] || missing+=(python3)
    # tests/onboarding: a real pm2 daemon for opsbot discover (npm install -g pm2, below)
    command -v npm >/dev/null || missing+=(npm)
    command -v pm2 >/dev/null || missing+=(pm2)
    echo "${missing[*]}"
}

banner "system packages"
missing="$(missing_tools)"
if [[ -n "$missing" ]]; then
    if [[ "$(id -u)" -ne 0 ]]; then
        die "missing: $missing. Run as root (the lab starts sshd, dockerd and postgres) or:
  apt-get install -y --no-install-recommends ${APT_PACKAGES[*]}"
    fi
    echo "missing: $missing; installing with apt-get"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${APT_PACKAGES[@]}"
    if ! command -v pm2 >/dev/null; then
        # Debian's npm conflicts with a NodeSource nodejs (which carries its own npm): only
        # where there is no npm at all
        command -v npm >/dev/null \
            || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm
        npm install -g "pm2@$PM2_VERSION"
    fi
    missing="$(missing_tools)"
    [[ -z "$missing" ]] || die "still missing after apt-get install: $missing"
else
    echo "all present"
fi
if [[ "$(id -u)" -ne 0 ]]; then
    echo "warning: not root; the lab fixtures (sshd user, dockerd, postgres) will fail" >&2
fi

banner "python environment: .venv from the lock (requirements/dev.txt)"
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null || die "$PY not found (apt-get install -y python3)"
lock=requirements/dev.txt
[[ -f $lock ]] || die "$lock is missing (bash scripts/lock.sh writes it)"
# the venv is made anew whenever the lock (or the python) changed: it holds exactly the lock
want="$(sha256sum "$lock" | cut -d' ' -f1) $("$PY" -c 'import sys; print(sys.version.split()[0])')"
if [[ ! -x .venv/bin/python || "$(cat .venv/.opsbot-dev-lock 2>/dev/null)" != "$want" ]]; then
    rm -rf .venv
    if ! "$PY" -m venv .venv; then
        # Debian/Ubuntu ship venv's pip separately
        [[ "$(id -u)" -eq 0 ]] || die "$PY -m venv failed: apt-get install -y python3-venv"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3-venv python3-pip
        rm -rf .venv
        "$PY" -m venv .venv
    fi
    .venv/bin/python -m pip --version >/dev/null 2>&1 || die "pip missing in .venv"
    echo "installing $lock (exact versions, hashes checked)"
    .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r "$lock"
    echo "$want" > .venv/.opsbot-dev-lock
fi
PY="$PWD/.venv/bin/python"
# the project itself, editable, built by the locked setuptools (nothing unpinned is fetched)
"$PY" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
"$PY" -m pip check
echo "using $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"

banner "ruff check"
"$PY" -m ruff check .

banner "mypy"
"$PY" -m mypy

banner "pytest $*"
"$PY" -m pytest -q "$@"
