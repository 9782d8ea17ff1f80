"""Redaction: every shape of secret a target may print is hidden before it leaves opsbot."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading

import pytest

from opsbot.redact import MASK, RedactingFilter, Redactor, install_log_redaction
from opsbot.render import FOLD_AT, Document, Reply
from tests.secrets_corpus import CORPUS, HMAC_SECRET, OPSBOT_BOT_TOKEN, WEB_TOKEN, Secret, leaks


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
        ("Api_Key=k3y-value", "k3y-value"),
        # IGNORECASE matches "ſ" for "s" and the Kelvin sign for "k": the hints see them too.
        ("paſſword=hunter22", "hunter22"),
        ("api_\u212aey: abcdef123456", "abcdef123456"),
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


@pytest.mark.parametrize("secret", CORPUS, ids=lambda s: s.name)
def test_every_corpus_secret_is_hidden(secret: Secret) -> None:
    redactor = Redactor([OPSBOT_BOT_TOKEN, WEB_TOKEN, HMAC_SECRET])
    redacted = redactor.redact(secret.text)
    assert leaks(redacted) == []
    assert MASK in redacted


def test_redaction_is_idempotent_and_remembers_only_what_it_returned() -> None:
    """A reply passes several choke points; the redactor returns a text it produced as it is
    (so it must be a fixed point), and a text holding a secret is never taken for one."""
    redactor = Redactor([OPSBOT_BOT_TOKEN, WEB_TOKEN, HMAC_SECRET])
    for secret in CORPUS:
        padded = f"{secret.text}\n{'ordinary output line ' * 4}"  # long enough to be memoised
        once = redactor.redact(padded)
        assert Redactor([OPSBOT_BOT_TOKEN, WEB_TOKEN, HMAC_SECRET]).redact(once) == once
        assert redactor.redact(once) == once
        again = redactor.redact(padded)  # the original, with its secret, is scanned afresh
        assert again == once and leaks(again) == []


@pytest.mark.parametrize(
    "line",
    [
        "commit 3f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39 merged",  # a git SHA is not a key
        "/usr/lib/python3/dist-packages/telegram/ext/_application.py line 1234",
        "ghp is short for nothing here; xoxo and glpat are words",
        "eyJ alone is not a token",
        "-----BEGIN CERTIFICATE----- is public",
    ],
)
def test_corpus_look_alikes_survive(line: str) -> None:
    assert Redactor().redact(line) == line


def test_a_private_key_cut_short_is_hidden_to_the_end() -> None:
    text = "key: -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lg"
    assert Redactor().redact(text) == f"key: {MASK}"


def test_json_documents_are_redacted_field_by_field_except_kept_fields() -> None:
    doc = {"summary": CORPUS[0].text, "fingerprint": "f-1", "n": 3, "list": [CORPUS[4].text]}
    redacted = Redactor().redact_json(doc, frozenset({"fingerprint"}))
    assert leaks(json.dumps(redacted)) == []
    assert redacted["fingerprint"] == "f-1" and redacted["n"] == 3


def test_the_log_formatter_redacts_tracebacks_and_the_excepthook_too() -> None:
    stream, hook_out = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    saved = sys.excepthook, threading.excepthook
    root.addHandler(handler)
    try:
        install_log_redaction(Redactor([WEB_TOKEN]), stream=hook_out)
        try:
            raise RuntimeError(f"cannot connect: {CORPUS[4].text} with {WEB_TOKEN}")
        except RuntimeError as exc:
            logging.getLogger("test.redact").error("failed %s", CORPUS[0].text, exc_info=True)
            sys.excepthook(type(exc), exc, exc.__traceback__)
    finally:
        root.removeHandler(handler)
        sys.excepthook, threading.excepthook = saved
    assert "Traceback" in stream.getvalue() and "Traceback" in hook_out.getvalue()
    assert leaks(stream.getvalue()) == [] and leaks(hook_out.getvalue()) == []
    assert stream.getvalue().count(MASK) >= 3


def test_replies_leave_without_terminal_escapes_and_with_long_lines_folded() -> None:
    coloured = "\x1b[31mERROR\x1b[0m payment failed\x07 \x1b]0;title\x07done\x00"
    progress = "downloading 10%\rdownloading 100%\r\nnext"
    long_line = "x" * (FOLD_AT * 2 + 10)
    reply = Reply(
        text=coloured,
        block=f"{progress}\n{long_line}",
        document=Document("a.log", f"{coloured}\n{CORPUS[0].text}\n".encode()),
    ).redacted(Redactor())
    assert reply.text == "ERROR payment failed done"
    lines = reply.block.split("\n")
    assert lines[:2] == ["downloading 100%", "next"]
    assert [len(line) for line in lines[2:]] == [FOLD_AT, FOLD_AT + 2, 12]
    assert lines[3].startswith("↪ ")
    assert reply.document is not None
    content = reply.document.content.decode()
    assert content.startswith("ERROR payment failed done\n") and leaks(content) == []
    raw = Document("backup.bin", b"\x1b[31m\x00binary", raw=True)
    assert Reply(text="x", document=raw).redacted(Redactor()).document == raw
