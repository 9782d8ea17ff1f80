"""Debian's docker-registry on loopback, twice over one storage: open (the lab dockerd pushes
to it) and behind token authentication, with a tiny real token server.

The token server (``http.server`` in a thread) checks the login by basic auth and issues the
ES256 JWT the registry verifies against a self-signed certificate made for the session
(``x5c`` in the header), as Docker Hub's or GitLab's token servers do.

A stand-in until the ``deploy`` branch's ``tests/lab/registry.py`` lands: then the open
registry comes from there and only the token server stays here.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from tests.lab.ports import free_port, require_binary, start_process, stop_process, wait_until

SERVICE, ISSUER = "opsbot-lab-registry", "opsbot-lab-token-issuer"
USERNAME, PASSWORD = "deployer", "s3cret-registry-pass-7781"


@dataclass(frozen=True)
class LabRegistry:
    host: str  # 127.0.0.1:PORT, as an image reference names it (the open one)
    url: str  # http://127.0.0.1:PORT
    token_url: str  # the registry behind token auth, same storage
    token_requests: list[dict[str, Any]]  # what the token server was asked (login, scope)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _Issuer:
    def __init__(self, directory: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip
        self.bundle = directory / "token-root.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def token(self, subject: str, scope: str) -> str:
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
        access = []
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind == "repository" and name:
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8),
                  "access": access}  # fmt: skip
        signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        der_sig = self.key.sign(signing.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der_sig)
        return f"{signing}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _token_server(issuer: _Issuer, seen: list[dict[str, Any]]) -> ThreadingHTTPServer:
    expected = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            login = self.headers.get("Authorization")
            seen.append({"login": login is not None, "scope": query.get("scope", [""])[0],
                         "service": query.get("service", [""])[0]})  # fmt: skip
            if login != expected:
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"token": issuer.token(USERNAME, query.get("scope", [""])[0]),
                               "expires_in": 300}).encode()  # fmt: skip
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/", timeout=1) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except OSError:
        return False


def _config(storage: Path, port: int, auth: dict[str, Any] | None) -> str:
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(storage)}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    if auth is not None:
        config["auth"] = auth
    return json.dumps(config)  # JSON is YAML


@contextmanager
def start_registries(tmp_path: Path) -> Iterator[LabRegistry]:
    binary = require_binary("docker-registry", "docker-registry")
    tmp_path.mkdir(parents=True, exist_ok=True)
    storage = tmp_path / "storage"
    storage.mkdir(exist_ok=True)
    issuer = _Issuer(tmp_path)
    seen: list[dict[str, Any]] = []
    server = _token_server(issuer, seen)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    realm = f"http://127.0.0.1:{server.server_address[1]}/token"
    token_auth = {"token": {"realm": realm, "service": SERVICE, "issuer": ISSUER,
                            "rootcertbundle": str(issuer.bundle)}}  # fmt: skip
    procs = []
    try:
        urls = []
        for name, auth in (("open", None), ("token", token_auth)):
            port = free_port()
            config = tmp_path / f"registry-{name}.yml"
            config.write_text(_config(storage, port, auth))
            log = tmp_path / f"registry-{name}.log"
            procs.append(start_process([binary, "serve", str(config)], log))
            urls.append(f"http://127.0.0.1:{port}")
            wait_until(partial(_answers, urls[-1]), what=f"docker-registry ({name})", log=log,
                       proc=procs[-1])  # fmt: skip
        host = urls[0].removeprefix("http://")
        yield LabRegistry(host=host, url=urls[0], token_url=urls[1], token_requests=seen)
    finally:
        for proc in procs:
            stop_process(proc)
        server.shutdown()
        server.server_close()
