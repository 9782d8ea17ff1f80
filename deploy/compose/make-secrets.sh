#!/usr/bin/env bash
# Make the files the compose deployments read, in deploy/compose/secrets/, each owned by the
# container user that reads it (hence root, or sudo: a 0600 key of yours is unreadable to them):
#   opsbot_token    the bot token (from $OPSBOT_TOKEN, else asked)     uid 10001 (opsbot), 0400
#   ssh_key         a copy of $SSH_KEY (default ~/.ssh/opsbot_ed25519) uid 10001, 0400
#   known_hosts     a copy of $KNOWN_HOSTS (default ~/.ssh/known_hosts) 0444
#   redis.conf      requirepass <random>, appendonly yes               uid 999 (redis), 0400
#   redis_url       redis://:<same password>@redis:6379/0              uid 10001, 0400
# Existing files are kept (delete one to make it again), so re-running is harmless.
#   sudo OPSBOT_TOKEN=123456:ABC... SSH_KEY=~/.ssh/opsbot_ed25519 deploy/compose/make-secrets.sh
set -euo pipefail

OPSBOT_UID=10001
REDIS_UID=999   # the redis user of the redis:*-alpine images
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${SECRETS_DIR:-$here/secrets}"
user_home="$(getent passwd "${SUDO_USER:-$(id -un)}" | cut -d: -f6)"
ssh_key="${SSH_KEY:-$user_home/.ssh/opsbot_ed25519}"
known_hosts="${KNOWN_HOSTS:-$user_home/.ssh/known_hosts}"

die() { printf 'make-secrets.sh: %s\n' "$*" >&2; exit 1; }
[[ "$(id -u)" -eq 0 ]] || die "run as root (sudo): the files are given to uid $OPSBOT_UID and $REDIS_UID"
mkdir -p "$dir"
chmod 0755 "$dir"

exists() { [[ -s "$dir/$1" ]] && echo "kept    $dir/$1"; }
write() {  # write NAME OWNER MODE < content
    (umask 077 && cat >"$dir/$1")
    chown "$2:$2" "$dir/$1"
    chmod "$3" "$dir/$1"
    echo "made    $dir/$1"
}

if ! exists opsbot_token; then
    token="${OPSBOT_TOKEN:-}"
    if [[ -z "$token" ]]; then
        [[ -t 0 ]] || die "set OPSBOT_TOKEN (the token from @BotFather)"
        read -rsp "opsbot's bot token (from @BotFather): " token && echo
    fi
    [[ "$token" =~ ^[0-9]+:[A-Za-z0-9_-]+$ ]] || die "that does not look like a bot token"
    printf '%s\n' "$token" | write opsbot_token "$OPSBOT_UID" 0400
fi
if ! exists ssh_key; then
    [[ -r "$ssh_key" ]] || die "no SSH key at $ssh_key (set SSH_KEY=...)"
    write ssh_key "$OPSBOT_UID" 0400 <"$ssh_key"
fi
if ! exists known_hosts; then
    [[ -r "$known_hosts" ]] \
        || die "no known_hosts at $known_hosts (ssh-keyscan -p PORT HOST >> it; KNOWN_HOSTS=...)"
    write known_hosts 0 0444 <"$known_hosts"
fi
if ! exists redis.conf; then
    password="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    printf 'requirepass %s\nappendonly yes\n' "$password" | write redis.conf "$REDIS_UID" 0400
    rm -f "$dir/redis_url"
fi
if ! exists redis_url; then
    password="$(sed -n 's/^requirepass //p' "$dir/redis.conf")"
    printf 'redis://:%s@redis:6379/0\n' "$password" | write redis_url "$OPSBOT_UID" 0400
fi
echo "done: docker compose up -d                       (one replica, SQLite), or"
echo "      docker compose -f deploy/compose/docker-compose.replicas.yml up -d   (two, Redis)"
