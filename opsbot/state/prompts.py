"""Reply prompts: a message asking for a reply (``Reply.prompt``) and the command the reply
becomes, e.g. "Update for INC-3" → ``/incident update INC-3 <the reply's text>``.

The prompt is filed under its outbox ref before it is queued (``expect``); once delivered,
the outbox worker notes which Telegram message the ref became (``shown``); a reply to that
message finds the command (``answering``). Kept in the store with a TTL, not in memory, so
a restart or another replica still knows what a reply answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from opsbot.state.store import JSONDoc, Store

NAMESPACE = "reply-prompts"
TTL = 86400.0  # a prompt answered after a day is ordinary chatter


@dataclass(frozen=True, slots=True)
class Prompt:
    """What a reply becomes: ``/verb *args <reply's words>``."""

    verb: str
    args: tuple[str, ...]

    def to_doc(self) -> JSONDoc:
        return {"verb": self.verb, "args": list(self.args)}

    @classmethod
    def from_doc(cls, doc: JSONDoc) -> Prompt:
        return cls(str(doc["verb"]), tuple(str(a) for a in doc["args"]))


async def expect(store: Store, ref: int, prompt: Prompt) -> None:
    """File the prompt that will be sent as message ``ref``."""
    await store.put(NAMESPACE, f"r{ref}", prompt.to_doc(), ttl=TTL)


async def shown(store: Store, ref: int, chat: int, message_id: int) -> None:
    """The prompt ``ref`` became ``message_id`` in ``chat``: replies to it now find it."""
    filed = await store.get(NAMESPACE, f"r{ref}")
    if filed is not None:
        await store.put(NAMESPACE, f"m{chat}:{message_id}", filed.value, ttl=TTL)


async def answering(store: Store, chat: int, message_id: int) -> Prompt | None:
    """The prompt a reply to ``message_id`` in ``chat`` answers, if that message is one."""
    found = await store.get(NAMESPACE, f"m{chat}:{message_id}")
    return Prompt.from_doc(found.value) if found is not None else None
