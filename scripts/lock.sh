#!/usr/bin/env bash
# Refresh the lock, show what moved, then run the whole suite on it:
#   bash scripts/lock.sh                      every package to the newest pyproject.toml allows
#   bash scripts/lock.sh -P redis -P mypy     only these (the rest stay as locked)
#   bash scripts/lock.sh --no-test ...        write the lock, skip the suite
# The lock (requirements/*.txt: exact versions with their hashes) is what scripts/test.sh,
# scripts/try.sh and the Dockerfile install; pyproject.toml keeps the ranges for library users.
# Commit the new lock with the list of what moved, once the suite passed on it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
UV_VERSION=0.13.8  # the resolver, pinned too: a new uv may resolve the same ranges otherwise
PY="${PYTHON:-python3}"
die() { printf 'scripts/lock.sh: %s\n' "$*" >&2; exit 1; }

run_tests=1
upgrade=(--upgrade)
packages=()
while (($#)); do
    case "$1" in
        --no-test) run_tests=0 ;;
        -P | --upgrade-package) [[ $# -ge 2 ]] || die "$1 needs a package name"
            packages+=(--upgrade-package "$2"); shift ;;
        *) die "unknown argument: $1 (see the top of this file)" ;;
    esac
    shift
done
((${#packages[@]} == 0)) || upgrade=("${packages[@]}")

tools=.venv-lock
if [[ ! -x $tools/bin/uv ]] || [[ "$($tools/bin/uv --version)" != "uv $UV_VERSION"* ]]; then
    rm -rf "$tools"
    "$PY" -m venv "$tools" || die "python3 -m venv failed (apt-get install -y python3-venv)"
    "$tools/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi

# pyproject's build backend belongs in the lock too: the project itself is installed with
# --no-build-isolation, so nothing unpinned is fetched to build it
build_requires="$("$PY" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')"
compile() {  # compile OUTPUT [uv pip compile arguments...]
    local out="$1"; shift
    printf '%s\n' "$build_requires" | "$tools/bin/uv" pip compile --quiet pyproject.toml - \
        --universal --python-version 3.11 --generate-hashes \
        --custom-compile-command "bash scripts/lock.sh" -o "$out" "$@"
}
pins() { { grep -hoE '^[a-z0-9._-]+==[^ ;]+( ;[^\\]*)?' "$@" 2>/dev/null || true; } | sed 's/ *$//' | sort -u; }

mkdir -p requirements
before="$(pins requirements/dev.txt)"
# dev.txt: tests and benchmarks (runtime + dev + bench); runtime.txt: the image and try.sh,
# constrained to dev.txt so that both install the same version of every package they share
compile requirements/dev.txt --extra dev --extra bench "${upgrade[@]}"
compile requirements/runtime.txt --constraint requirements/dev.txt
after="$(pins requirements/dev.txt)"

echo "what moved in requirements/dev.txt:"
moved="$(diff <(printf '%s\n' "$before") <(printf '%s\n' "$after") | grep -E '^[<>]' || true)"
printf '%s\n' "${moved:-  (nothing)}"

if ((run_tests)); then
    rm -rf .venv  # the suite runs on exactly the new lock, not on what an older one left
    bash scripts/test.sh
fi
