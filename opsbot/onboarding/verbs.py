"""/discover ENDPOINT (admin): what runs on a configured endpoint, as a draft config.

The answer is a summary and the draft as a YAML document; nothing is written anywhere (the
admin copies what they want into the config). Only a configured endpoint can be named here:
chat text never makes opsbot connect to a host the config does not know.
"""

from __future__ import annotations

from opsbot.config import Role
from opsbot.errors import UsageError
from opsbot.render import Document, Reply
from opsbot.services import Services
from opsbot.verbs.registry import Caller, Verb, register

#: A draft longer than this arrives as a .yaml document rather than in the message.
INLINE_LIMIT = 3000


async def discover(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/discover ENDPOINT"""
    if len(args) != 1:
        raise UsageError("usage: /discover ENDPOINT")
    known = services.settings.all_endpoints
    if args[0] not in known:
        shown = args[0] if len(args[0]) <= 32 else args[0][:32] + "…"
        names = ", ".join(sorted(known))
        raise UsageError(f"unknown endpoint {shown!r}; known endpoints: {names}")
    # loaded on first use: its probes import asyncssh and the docker SDK, which an idle bot
    # without SSH or Docker endpoints never loads (the idle-RSS bench)
    from opsbot.onboarding.drafting import discover_draft

    drafted = await discover_draft([args[0]], services.settings, pool=services.ssh)
    draft = drafted.draft
    lines = [*drafted.summary(), draft.report()[0]]
    lines += [f"⚠️ {problem}" for problem in draft.problems]
    lines.append("Nothing was written: review the draft, then add it to the config.")
    text = "\n".join(lines)
    body = draft.to_yaml()
    if len(body) > INLINE_LIMIT:
        return Reply(text=text, document=Document(f"discover-{args[0]}.yaml", body.encode()))
    return Reply(text=text, block=body)


register(
    Verb(
        "discover",
        Role.admin,
        "/discover ENDPOINT",
        "draft targets from what runs on an endpoint (read-only; writes nothing)",
        discover,
    )
)
