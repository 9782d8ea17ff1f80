"""The blocking plumbing under the Docker executor, run in worker threads: an exec's raw
stream demultiplexed against a deadline, files in and out as tar archives, socket probes."""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import socket
import ssl
import struct
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from opsbot.reach.executors import ExecResult
from opsbot.reach.executors.transfer import CHUNK_SIZE, TransferError, temp_beside

log = logging.getLogger(__name__)


def _exec_blocking(
    api: Any, container: str, argv: list[str], stdin: bytes | None, deadline_in: float
) -> ExecResult:
    """Create and start an exec, feed stdin, demultiplex its output until EOF or deadline.

    This reads the upgraded HTTP connection itself rather than through ``exec_run``: that
    gives a deadline, stdin, and reading through the HTTP response's buffer, so output that
    arrived together with the response headers is not lost.
    """
    started = time.monotonic()
    deadline = started + deadline_in
    exec_id = api.exec_create(
        container, argv, stdout=True, stderr=True, stdin=stdin is not None, tty=False
    )["Id"]
    response = api._post_json(
        api._url("/exec/{0}/start", exec_id),
        headers={"Connection": "Upgrade", "Upgrade": "tcp"},
        data={"Tty": False, "Detach": False},
        stream=True,
    )
    try:
        api._raise_for_status(response)
        reader = response.raw._fp.fp  # BufferedReader over the hijacked connection
        raw = reader.raw
        sock: socket.socket = getattr(raw, "_sock", raw)
        feeder = None
        if stdin is not None:
            feeder = threading.Thread(target=_feed, args=(sock, stdin), daemon=True)
            feeder.start()
        out, err, timed_out = _demux(reader, sock, deadline)
    finally:
        response.close()
    if timed_out:
        return ExecResult(None, out, err, time.monotonic() - started, timed_out=True)
    exit_code: int | None = None
    for _ in range(100):  # the exit code lands a moment after the stream ends
        info = api.exec_inspect(exec_id)
        if not info.get("Running"):
            exit_code = info.get("ExitCode")
            break
        time.sleep(0.01)
    return ExecResult(exit_code, out, err, time.monotonic() - started)


def _probe_unix_socket(path: str, timeout: float) -> None:
    """Connect once and close, raising OSError if nobody listens.

    docker 7.1's ``UnixHTTPConnection.connect`` leaks its socket when the connect fails (a
    ResourceWarning at garbage collection); checking first keeps the common failure, a wrong
    or dead socket at startup, clean.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path if path.startswith("/") else "/" + path)


def _feed(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)


def _demux(reader: Any, sock: socket.socket, deadline: float) -> tuple[str, str, bool]:
    """Read Docker's multiplexed stream (8-byte frame headers) until EOF or the deadline."""
    streams = {1: bytearray(), 2: bytearray()}
    timed_out = False
    try:
        while True:
            header = _read_exact(reader, sock, 8, deadline)
            if header is None:
                break
            kind, size = struct.unpack(">BxxxL", header)
            payload = _read_exact(reader, sock, size, deadline) if size else b""
            if payload is None:
                break
            streams.get(kind, streams[1]).extend(payload)
    except TimeoutError:
        timed_out = True
    return (
        streams[1].decode("utf-8", errors="replace"),
        streams[2].decode("utf-8", errors="replace"),
        timed_out,
    )


def _read_exact(reader: Any, sock: socket.socket, n: int, deadline: float) -> bytes | None:
    """``n`` bytes, or None at EOF; TimeoutError when the deadline passes first."""
    buf = bytearray()
    while len(buf) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        try:
            chunk = reader.read1(n - len(buf))
        except TimeoutError:
            raise TimeoutError from None
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _fetch_archive(
    api: Any, container: str, path: str, local_path: Path, stop: threading.Event
) -> int:
    """Blocking: read GET /archive's tar stream; write its one file to ``local_path``."""
    chunks, _stat = api.get_archive(container, path, chunk_size=CHUNK_SIZE)
    temp = Path(temp_beside(local_path))
    reader: Any = _ChunkReader(chunks)
    copied = 0
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            member = tar.next()
            src = tar.extractfile(member) if member is not None and member.isfile() else None
            if src is None:
                raise TransferError(f"cannot fetch {path}: not a regular file")
            with temp.open("wb") as out:
                while chunk := src.read(CHUNK_SIZE):
                    if stop.is_set():
                        raise TransferError(f"fetching {path} was abandoned")
                    out.write(chunk)
                    copied += len(chunk)
        os.replace(temp, local_path)
    except (OSError, tarfile.TarError) as exc:
        temp.unlink(missing_ok=True)
        raise TransferError(f"cannot fetch {path}: {_describe(exc)}") from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return copied


def _push_archive(
    api: Any, container: str, local_path: Path, path: str, stop: threading.Event
) -> int:
    """Blocking: PUT /archive a one-member tar stream, extracted into ``path``'s directory."""
    directory, name = posixpath.split(path)
    if not path.startswith("/") or not name:
        raise TransferError(f"cannot push to {path!r}: needs an absolute file path")
    try:
        src = local_path.open("rb")
    except OSError as exc:
        raise TransferError(f"cannot read {local_path}: {exc.strerror or exc}") from None
    with src:
        st = os.fstat(src.fileno())
        info = tarfile.TarInfo(name)
        info.size = st.st_size
        info.mode = st.st_mode & 0o777
        info.mtime = int(st.st_mtime)
        api.put_archive(container, directory, _TarBody(info, src, stop))
    return st.st_size


class _ChunkReader:
    """A minimal file object over an iterator of byte chunks (for ``tarfile`` stream mode)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            self._buffer += chunk
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


class _TarBody:
    """A one-file tar archive streamed from an open file; its length is known in advance.

    ``requests`` sends an iterable with ``__len__`` as a Content-Length body, chunk by chunk.
    """

    def __init__(self, info: tarfile.TarInfo, src: Any, stop: threading.Event) -> None:
        self._header = info.tobuf(format=tarfile.PAX_FORMAT)
        self._size = info.size
        self._src = src
        self._stop = stop

    def __len__(self) -> int:
        padded = -(-self._size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        return len(self._header) + padded + 2 * tarfile.BLOCKSIZE

    def __iter__(self) -> Iterator[bytes]:
        yield self._header
        left = self._size
        while left > 0:
            if self._stop.is_set():
                raise TransferError("the upload was abandoned")
            chunk = self._src.read(min(CHUNK_SIZE, left))
            if not chunk:
                raise TransferError("the file shrank while it was being sent")
            left -= len(chunk)
            yield chunk
        yield b"\0" * (-self._size % tarfile.BLOCKSIZE + 2 * tarfile.BLOCKSIZE)


def _describe(exc: BaseException) -> str:
    tls = _tls_problem(exc)
    if tls is not None:
        return tls
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc).strip()
    return text or type(exc).__name__


def _tls_problem(exc: BaseException) -> str | None:
    """A TLS failure buried in the SDK's exception chain, said plainly; None if there is none.

    requests and urllib3 wrap the ``ssl`` error several times over (MaxRetryError, SSLError,
    DockerException); the reader needs the one line of what to fix, not that chain.
    """
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen or len(seen) > 20:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            why = current.verify_message or current.reason or str(current)
            return (
                f"TLS: the engine's server certificate failed verification ({why}); "
                "check tls.ca_cert is the CA that signed the daemon's --tlscert"
            )
        if isinstance(current, ssl.SSLError):
            reason = str(current.reason or current)
            if any(word in reason.upper() for word in _REFUSED_CLIENT):
                return (
                    f"TLS: the engine refused our client certificate ({reason}); "
                    "tls.client_cert must be signed by the CA the daemon trusts (--tlscacert)"
                )
            return f"TLS handshake failed: {reason}"
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked += list(current.args)
        todo += [e for e in linked if isinstance(e, BaseException)]
    return None


#: OpenSSL alerts a server sends when it does not accept the client's certificate.
_REFUSED_CLIENT = ("BAD_CERTIFICATE", "UNKNOWN_CA", "CERTIFICATE_REQUIRED", "ACCESS_DENIED",
                   "UNSUPPORTED_CERTIFICATE", "CERTIFICATE_UNKNOWN")  # fmt: skip
