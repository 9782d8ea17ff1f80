"""Short ids that people type on a phone: ``/approve K7M2QX``, ``/ack 9PWX3H7T``.

An alphabet without look-alikes (no 0/O, 1/I/L, nor U), read in any case. Older ids, made
before this alphabet, stay as they were (``canonical`` leaves them alone).
"""

from __future__ import annotations

import secrets

ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def canonical(typed: str, length: int) -> str:
    """The id as stored, for one typed in any case; anything else unchanged."""
    upper = typed.strip().upper()
    if len(upper) == length and all(c in ALPHABET for c in upper):
        return upper
    return typed
