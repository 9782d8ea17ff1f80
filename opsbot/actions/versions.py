"""Which versions of a target ran healthy, so a rollback knows where to go back to.

Per target, an append-only log in the store (namespace ``versions``, key = target name,
newest first on read, capped to ``KEEP`` entries). An entry is written only when opsbot sees
the target healthy on a version that differs from the last one recorded, so the log is the
sequence of known-good versions, not a sample of every check.

For a container the version is its image as configured (``quizbot:1.4``) and the image id the
tag resolved to when it ran (``sha256:…``): the id is what a rollback runs, since a tag can be
moved. Other kinds may record a ``release`` string instead (or nothing: they roll back with
their configured argv, or ``kubectl rollout undo``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from opsbot.state.store import JSONDoc, Store

NAMESPACE = "versions"
#: Known-good versions kept per target.
KEEP = 50


@dataclass(frozen=True, slots=True)
class Version:
    image: str | None
    image_id: str | None
    release: str | None
    seen_at: float  # Unix time it was recorded healthy

    def same_as(self, other: Version) -> bool:
        """Same version, whenever it was seen."""
        return (self.image, self.image_id, self.release) == (
            other.image,
            other.image_id,
            other.release,
        )

    def label(self) -> str:
        """``quizbot:1.4 (sha256:0123456789ab…)``, or the release, for a card."""
        parts = [self.image or self.release or "unknown version"]
        if self.image_id and self.image_id != self.image:
            parts.append(f"({short_id(self.image_id)})")
        return " ".join(parts)

    def to_doc(self) -> JSONDoc:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: JSONDoc) -> Version:
        return cls(
            image=_str_or_none(doc.get("image")),
            image_id=_str_or_none(doc.get("image_id")),
            release=_str_or_none(doc.get("release")),
            seen_at=float(doc.get("seen_at") or 0.0),
        )


def short_id(image_id: str) -> str:
    """``sha256:0123456789ab…``: enough to tell images apart on a card."""
    algo, _, digest = image_id.partition(":")
    if not digest:
        return image_id[:12] + ("…" if len(image_id) > 12 else "")
    return f"{algo}:{digest[:12]}…"


async def record_healthy(store: Store, target_name: str, version: Version) -> bool:
    """Remember ``version`` as known-good; True if it was new (differs from the last one).

    Two replicas recording the same change at once may both append it; ``previous_good``
    does not mind duplicates.
    """
    last = await store.tail(NAMESPACE, target_name, 1)
    if last and Version.from_doc(last[0]).same_as(version):
        return False
    await store.append(NAMESPACE, target_name, version.to_doc(), keep=KEEP)
    return True


async def history(store: Store, target: str, limit: int) -> list[Version]:
    """The newest ``limit`` known-good versions, newest first."""
    return [Version.from_doc(doc) for doc in await store.tail(NAMESPACE, target, limit)]


async def previous_good(store: Store, target: str, current_image_id: str | None) -> Version | None:
    """The newest known-good version whose image id differs from the one running now."""
    for version in await history(store, target, KEEP):
        if version.image_id is not None and version.image_id != current_image_id:
            return version
    return None


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)
