"""One corpus of real-looking secrets, used by every redaction test.

Each entry is what a person or a target would really write (``text``) and the part of it that
must never be stored or shown (``needle``): a contiguous run of characters that survives JSON
and HTML escaping, so finding it in raw SQLite bytes, a Redis value, a log or a message means a
leak. None of these is a live credential; they only have the right shapes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Secret:
    name: str
    text: str
    needle: str


# The configured secrets of the opsbot under test (its own values are redacted as literals).
OPSBOT_BOT_TOKEN = "7000000001:AAopsbotTESTtokenXXXXXXXXXXXXXXXXXXX"
WEB_TOKEN = "w3b-t0ken-Kq8ZrT2vXc9LmN4p"
HMAC_SECRET = "hmac-s3cret-Pz7YwQ1uEa6JbV0"

_PEM_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0"
_JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkFkbWluIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)

CORPUS: tuple[Secret, ...] = (
    Secret(
        "telegram token",
        "bot 5123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1 crashed",
        "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1",
    ),
    Secret("aws access key", "key AKIAQ3EGRW7NJYZ4HK2P in use", "AKIAQ3EGRW7NJYZ4HK2P"),
    Secret(
        "aws secret key",
        "aws_secret_access_key=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",
        "Zx9Qm2LkV7bN4cR8tY1uW6pE3sD5fG0hJ2kL4mN8",
    ),
    Secret(
        "bare aws secret key",
        "rotated to Hq7Wd2Xc9Vb4Nm1Lk8Jh3Gf6Ds0Az5Sx2Ec7Rv4T today",
        "Hq7Wd2Xc9Vb4Nm1Lk8Jh3Gf6Ds0Az5Sx2Ec7Rv4T",
    ),
    Secret(
        "postgres dsn",
        "db down: postgres://app:Tr0ub4dor-and-3@db.internal:5432/app",
        "Tr0ub4dor-and-3",
    ),
    Secret("redis dsn", "redis://:Rd1s-pa55-word-9@cache:6379/0 refused", "Rd1s-pa55-word-9"),
    Secret(
        "bearer header",
        "Authorization: Bearer 9f8e7d6c5b4a39281706f5e4d3c2b1a0zz",
        "9f8e7d6c5b4a39281706f5e4d3c2b1a0zz",
    ),
    Secret(
        "pem block",
        f"-----BEGIN RSA PRIVATE KEY-----\n{_PEM_BODY}\n-----END RSA PRIVATE KEY-----",
        _PEM_BODY[8:60],
    ),
    Secret("jwt", f"session {_JWT} expired", _JWT.split(".")[1][10:50]),
    Secret(
        "github classic token",
        "GITHUB_TOKEN is ghp_R4nd0mCl4ss1cT0k3nAbCdEfGhIjKlMnOpQr",
        "R4nd0mCl4ss1cT0k3nAbCdEfGhIjKlMnOpQr",
    ),
    Secret(
        "github fine-grained token",
        "push with github_pat_11ABCDEFG0123456789_"
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWX",
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWX",
    ),
    Secret("gitlab token", "CI uses glpat-Xy7Zk2Lm9Np4Qr6St8Uv now", "Xy7Zk2Lm9Np4Qr6St8Uv"),
    Secret(
        "slack bot token",
        "notify via xoxb-2048613357-4096227174-Jk8sLq2Wm5Nx7Vb3 fails",
        "2048613357-4096227174-Jk8sLq2Wm5Nx7Vb3",
    ),
    Secret(
        "slack user token",
        "xoxp-1234567890-0987654321-1122334455-abcdef0123456789 leaked",
        "1122334455-abcdef0123456789",
    ),
    Secret("opsbot's own token", f"polling with {OPSBOT_BOT_TOKEN}", "AAopsbotTESTtokenXXXX"),
    Secret("opsbot's web token", f"curl -H 'X: {WEB_TOKEN}'", WEB_TOKEN),
    Secret("opsbot's hmac secret", f"signing with {HMAC_SECRET} now", HMAC_SECRET),
)


def leaks(data: str | bytes) -> list[str]:
    """The names of the corpus secrets whose needle appears in ``data``."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    return [s.name for s in CORPUS if s.needle in text]
