"""A throwaway PKI for the lab's TLS daemons: a CA, a server and a client certificate.

Made with the ``cryptography`` package (already installed: asyncssh needs it). ``rogue``
is a second CA with its own client certificate: a client the server must refuse.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class ClientCert:
    ca_cert: Path  # the CA that signed the *server* (what the client trusts)
    client_cert: Path
    client_key: Path


@dataclass(frozen=True)
class LabPKI:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client: ClientCert  # signed by the server's CA
    rogue: ClientCert  # signed by another CA: refused by the server


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(directory: Path, stem: str, cert: x509.Certificate, key: Key | None) -> Path:
    path = directory / f"{stem}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        key_path = directory / f"{stem}-key.pem"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
    return path


def _certificate(
    subject: str,
    key: Key,
    issuer: tuple[x509.Name, Key] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    elif server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _ca(directory: Path, stem: str, subject: str) -> tuple[Path, x509.Name, Key]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(subject, key, None, ca=True)
    return _write(directory, stem, cert, None), cert.subject, key


def _leaf(
    directory: Path, stem: str, subject: str, issuer: tuple[x509.Name, Key], *, server: bool
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(subject, key, issuer, server=server)
    return _write(directory, stem, cert, key), directory / f"{stem}-key.pem"


def make_pki(directory: Path) -> LabPKI:
    """Write the CA, server, client and rogue files into ``directory`` (created)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, ca_name, ca_key = _ca(directory, "ca", "opsbot lab CA")
    server_cert, server_key = _leaf(
        directory, "server", "localhost", (ca_name, ca_key), server=True
    )
    client_cert, client_key = _leaf(directory, "client", "opsbot", (ca_name, ca_key), server=False)
    _rogue_ca, rogue_name, rogue_key = _ca(directory, "rogue-ca", "someone else's CA")
    rogue_cert, rogue_key_path = _leaf(
        directory, "rogue-client", "opsbot", (rogue_name, rogue_key), server=False
    )
    return LabPKI(
        ca_cert=ca_path,
        server_cert=server_cert,
        server_key=server_key,
        client=ClientCert(ca_path, client_cert, client_key),
        rogue=ClientCert(ca_path, rogue_cert, rogue_key_path),
    )
