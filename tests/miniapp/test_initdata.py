"""initData as Telegram signs it: accepted only when it is this bot's, fresh and untouched."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qsl, urlencode

from opsbot.miniapp.initdata import validate
from tests.factories import ALICE, OPERATED_TOKEN, OPSBOT_TOKEN
from tests.miniapp.lab import init_data, sign

HOUR = 3600.0


def test_a_fresh_signature_of_this_bot_names_its_user() -> None:
    user = validate(init_data(ALICE), OPSBOT_TOKEN, HOUR, time.time())
    assert user is not None and user.id == ALICE.id


def test_telegram_documented_example_shape_with_every_field_signed() -> None:
    """Fields beyond user and auth_date (chat_type, start_param, signature) are signed too."""
    data = init_data(ALICE, chat_type="private", start_param="ledger", signature="abc")
    assert validate(data, OPSBOT_TOKEN, HOUR, time.time()) is not None


def test_forged_expired_other_bot_and_missing_are_refused() -> None:
    now = time.time()
    fields = dict(parse_qsl(init_data(ALICE)))
    fields["user"] = json.dumps({"id": 1002, "first_name": "Bob"})  # another user, same hash
    assert validate(urlencode(fields), OPSBOT_TOKEN, HOUR, now) is None
    assert validate(init_data(ALICE, age=HOUR + 5), OPSBOT_TOKEN, HOUR, now) is None
    assert validate(init_data(ALICE, token=OPERATED_TOKEN), OPSBOT_TOKEN, HOUR, now) is None
    assert validate("", OPSBOT_TOKEN, HOUR, now) is None
    assert validate("not a query", OPSBOT_TOKEN, HOUR, now) is None


def test_a_signed_string_that_is_not_telegrams_shape_is_refused() -> None:
    now = time.time()
    doubled = init_data(ALICE) + "&auth_date=1"  # a key twice: not what Telegram signs
    assert validate(doubled, OPSBOT_TOKEN, HOUR, now) is None
    no_user = sign({"auth_date": str(int(now))}, OPSBOT_TOKEN)
    assert validate(no_user, OPSBOT_TOKEN, HOUR, now) is None
    from_the_future = sign(
        {"auth_date": str(int(now + 3600)), "user": json.dumps({"id": ALICE.id})}, OPSBOT_TOKEN
    )
    assert validate(from_the_future, OPSBOT_TOKEN, HOUR, now) is None
    upper = init_data(ALICE).replace("hash=", "hash=X")  # still hex? no: refused, not raised
    assert validate(upper, OPSBOT_TOKEN, HOUR, now) is None
