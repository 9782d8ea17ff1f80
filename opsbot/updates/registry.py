"""A small client of the Registry HTTP API v2 (distribution spec), through httpx.

Only what update notices need: a repository's tags (``GET /v2/<name>/tags/list``, following
``Link`` pages) and a tag's digest (``HEAD /v2/<name>/manifests/<tag>`` with every manifest
media type in ``Accept``: the digest of a multi-arch index is the one ``docker pull`` records).
Authentication follows the registry's ``WWW-Authenticate`` challenge: ``Basic`` with the
configured login, or ``Bearer``: a token from the named realm for the named service and scope
(with the login as basic auth when one is configured, anonymous otherwise), cached until it
expires. The login is never put in an error or a log line.

Image references are read as Docker reads them (``quizbot:1.4``, ``localhost:5000/team/bot``,
``ghcr.io/o/r@sha256:…``): a first part with a dot or a colon, or ``localhost``, is a host.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import httpx

#: Every manifest type a registry may hold for a tag, in the order a pull asks for them.
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
DOCKER_HUB = "registry-1.docker.io"
#: Pages of tags read at most (a registry pages by 100 or 1000: plenty for any one image).
MAX_PAGES = 20

Problem = Literal["unreachable", "timeout", "unauthorized", "not found", "bad answer"]


class RegistryError(Exception):
    """The registry could not answer: ``problem`` says how, the text what (never the login)."""

    def __init__(self, problem: Problem, text: str) -> None:
        super().__init__(text)
        self.problem = problem


@dataclass(frozen=True, slots=True)
class ImageRef:
    """An image reference taken apart: ``host`` (None: Docker Hub), ``repository``, ``tag``."""

    host: str | None
    repository: str
    tag: str | None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The reference as Docker names the repository (``localhost:5000/quizbot``)."""
        return f"{self.host}/{self.repository}" if self.host else self.repository


_REF = re.compile(
    r"^(?:(?P<host>[^/]+)/)??(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>[a-z0-9]+:[a-f0-9]{32,}))?$"
)


def parse_ref(text: str) -> ImageRef | None:
    """``localhost:5000/quizbot:1.4`` → host, repository, tag; None if it is not one."""
    first, sep, rest = text.partition("/")
    host: str | None = None
    if sep and ("." in first or ":" in first or first == "localhost"):
        host, text = first, rest
    match = _REF.match(text)
    if match is None or match.group("host"):
        return None
    repository = match.group("repo")
    if host is None and "/" not in repository:
        repository = f"library/{repository}"  # Docker Hub's official images
    tag = match.group("tag")
    digest = match.group("digest")
    return ImageRef(host, repository, tag if tag or digest else "latest", digest)


def base_url(ref: ImageRef) -> str:
    """Where a reference's registry answers by default (TLS: Docker's own default)."""
    if ref.host is None or ref.host == "docker.io":
        return f"https://{DOCKER_HUB}"
    return f"https://{ref.host}"


@dataclass(frozen=True, slots=True)
class Login:
    username: str
    password: str

    def __repr__(self) -> str:
        return f"Login({self.username!r}, ***)"


class Registry:
    """One registry, asked through one httpx client (``aclose`` when done)."""

    def __init__(
        self,
        url: str,
        *,
        login: Login | None = None,
        timeout: float = 10.0,
        verify: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._login = login
        self._client = httpx.AsyncClient(
            timeout=timeout, verify=verify, transport=transport, follow_redirects=True
        )
        self._tokens: dict[str, tuple[str, float]] = {}  # scope → (token, expires at)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def tags(self, repository: str) -> list[str]:
        """Every tag of ``repository`` (all pages, up to MAX_PAGES)."""
        found: list[str] = []
        path: str | None = f"/v2/{repository}/tags/list"
        for _ in range(MAX_PAGES):
            if path is None:
                break
            response = await self._request("GET", path, repository)
            if response.status_code == 404:
                raise RegistryError("not found", f"{self.url}: no repository {repository}")
            self._expect_ok(response, f"tags of {repository}")
            try:
                tags = response.json().get("tags") or []
            except ValueError:
                raise RegistryError("bad answer", f"{self.url}: tags of {repository} "
                                    "are not JSON") from None  # fmt: skip
            found += [t for t in tags if isinstance(t, str)]
            path = _next_page(response)
        return found

    async def digest(self, repository: str, tag: str) -> str | None:
        """The digest ``repository:tag`` resolves to now; None when there is no such tag."""
        path = f"/v2/{repository}/manifests/{tag}"
        headers = {"Accept": ", ".join(MANIFEST_TYPES)}
        response = await self._request("HEAD", path, repository, headers)
        if response.status_code == 404:
            return None
        self._expect_ok(response, f"manifest of {repository}:{tag}")
        digest = response.headers.get("Docker-Content-Digest")
        if digest:
            return str(digest)
        # Not every registry sends the header on HEAD: the digest is that of the body.
        response = await self._request("GET", path, repository, headers)
        self._expect_ok(response, f"manifest of {repository}:{tag}")
        return response.headers.get("Docker-Content-Digest") or (
            "sha256:" + hashlib.sha256(response.content).hexdigest()
        )

    # -- requests and authentication --------------------------------------------------------

    async def _request(
        self, method: str, path: str, repository: str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        scope = f"repository:{repository}:pull"
        sent = dict(headers or {})
        cached = self._tokens.get(scope)
        if cached is not None and cached[1] > time.monotonic():
            sent["Authorization"] = f"Bearer {cached[0]}"
        response = await self._send(method, path, sent)
        if response.status_code != 401:
            return response
        challenge = response.headers.get("WWW-Authenticate", "")
        scheme, params = parse_challenge(challenge)
        if scheme == "basic" and self._login is not None:
            auth = httpx.BasicAuth(self._login.username, self._login.password)
            response = await self._send(method, path, sent, auth=auth)
        elif scheme == "bearer" and "realm" in params:
            token = await self._token(params, scope)
            sent["Authorization"] = f"Bearer {token}"
            response = await self._send(method, path, sent)
        if response.status_code == 401:
            who = "the configured login" if self._login is not None else "no login"
            raise RegistryError("unauthorized", f"{self.url}: 401 Unauthorized with {who}")
        return response

    async def _token(self, params: dict[str, str], scope: str) -> str:
        """A bearer token from the challenge's realm (docker's token authentication)."""
        query = {"scope": params.get("scope") or scope}
        if "service" in params:
            query["service"] = params["service"]
        auth = None
        if self._login is not None:
            auth = httpx.BasicAuth(self._login.username, self._login.password)
        realm = params["realm"]
        with _reaching(f"token server {realm}"):
            response = await self._client.get(realm, params=query, auth=auth)
        if response.status_code in (401, 403):
            who = "the configured login" if self._login is not None else "no login"
            raise RegistryError(
                "unauthorized",
                f"{self.url}: {response.status_code} Unauthorized with {who} "
                f"(token server {realm})",
            )
        if response.status_code != 200:
            raise RegistryError("bad answer", f"token server {realm}: {response.status_code}")
        try:
            body = response.json()
            token = str(body.get("token") or body.get("access_token") or "")
            lifetime = float(body.get("expires_in") or 60)
        except (ValueError, TypeError, AttributeError):
            token, lifetime = "", 0.0
        if not token:
            raise RegistryError("bad answer", f"token server {realm} issued no token")
        self._tokens[scope] = (token, time.monotonic() + max(0.0, lifetime - 10))
        return token

    async def _send(
        self, method: str, path: str, headers: dict[str, str], auth: httpx.Auth | None = None
    ) -> httpx.Response:
        url = path if path.startswith("http") else self.url + path
        with _reaching(self.url):
            if auth is None:
                return await self._client.request(method, url, headers=headers)
            return await self._client.request(method, url, headers=headers, auth=auth)

    def _expect_ok(self, response: httpx.Response, what: str) -> None:
        if response.status_code == 404:
            raise RegistryError("not found", f"{self.url}: {what}: 404 Not Found")
        if response.status_code != 200:
            raise RegistryError("bad answer", f"{self.url}: {what}: HTTP {response.status_code}")


_PARAM = re.compile(r'(\w+)="([^"]*)"|(\w+)=([^\s,]+)')


@contextlib.contextmanager
def _reaching(what: str) -> Iterator[None]:
    """httpx's failure to reach ``what`` as a RegistryError: it timed out, or is unreachable."""
    try:
        yield
    except httpx.TimeoutException:
        raise RegistryError("timeout", f"{what} timed out") from None
    except httpx.HTTPError as exc:
        raise RegistryError("unreachable", f"{what} unreachable: {type(exc).__name__}") from None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="https://auth",service="reg",scope="repository:x:pull"`` → scheme
    (lower case) and its parameters."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        (m.group(1) or m.group(3)).lower(): m.group(2) if m.group(1) else m.group(4)
        for m in _PARAM.finditer(rest)
    }
    return scheme.lower(), params


def _next_page(response: httpx.Response) -> str | None:
    """The ``Link: </v2/x/tags/list?n=100&last=y>; rel="next"`` page, if any."""
    link = response.headers.get("Link", "")
    match = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link)
    if match is None:
        return None
    target = match.group(1)
    return target if target.startswith("/") else str(response.url.join(target))
