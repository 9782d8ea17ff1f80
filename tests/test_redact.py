"""Redaction: every shape of secret a target may print is hidden before it leaves opsbot."""

from __future__ import annotations

import logging

import pytest

from opsbot.redact import MASK, RedactingFilter, Redactor


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (
            "token 5123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1 ok",
            "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1",
        ),
        (
            "https://api.telegram.org/bot123456:ABCdefGHIjklMNOpqrSTUvwxYZ0123456789/getMe",
            "ABCdefGHIjklMNOpqrSTUvwxYZ0123456789",
        ),
        ("key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"),
        ("postgres://bot:hunter2@db:5432/app", "hunter2"),
        ("redis://:s3cr3tpass@cache:6379/0", "s3cr3tpass"),
        ("DATABASE_PASSWORD=correct-horse", "correct-horse"),
        ("export STRIPE_SECRET_KEY=sk_live_51Habc", "sk_live_51Habc"),
        ("  API_KEY: abcdef123456", "abcdef123456"),
        ('{"password": "p@ss-w0rd", "user": "x"}', "p@ss-w0rd"),
        ("host=db password=swordfish dbname=app", "swordfish"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI"),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\n"
            "-----END OPENSSH PRIVATE KEY-----",
            "b3BlbnNzaC1rZXktdjEAAAA",
        ),
    ],
)
def test_known_secret_shapes_are_hidden(text: str, secret: str) -> None:
    redacted = Redactor().redact(text)
    assert secret not in redacted
    assert MASK in redacted


def test_literal_config_secrets_are_hidden_wherever_they_appear() -> None:
    redactor = Redactor(["plain-words-secret", "abc"])  # too short literals are ignored
    assert redactor.redact("x plain-words-secret y") == f"x {MASK} y"
    assert redactor.redact("abc") == "abc"


@pytest.mark.parametrize(
    "line",
    [
        "2026-11-23 12:00:01 ERROR payment failed for user 42 (timeout after 3.2s)",
        "GET /health 200 12ms",
        "authbot: 330 critical, 330 warning",  # a target named auth…: a digest line
        "password_hash_rounds: 12",
        "tokens_used=1234 passes=3",
    ],
)
def test_ordinary_lines_survive(line: str) -> None:
    assert Redactor().redact(line) == line


def test_logging_filter_redacts_messages_and_arguments(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.redact")
    logger.addFilter(RedactingFilter(Redactor(["top-secret-value"])))
    with caplog.at_level(logging.INFO, logger="test.redact"):
        logger.info("calling %s with %s", "https://x/bot1:top-secret-value/getMe", "ok")
    assert "top-secret-value" not in caplog.text
    assert MASK in caplog.text
