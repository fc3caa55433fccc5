"""The kubelet's HTTPS endpoint, for ``kubectl logs``: ``GET /containerLogs/{ns}/{pod}/{container}``.

The API server proxies ``kubectl logs`` to the node's InternalIP and
``status.daemonEndpoints.kubeletEndpoint.Port``. Without ``--kubelet-certificate-authority`` it
does not verify the kubelet's certificate, so a self-signed one will do; the test bed's API
server has no kubelet client certificate either, so the endpoint asks for none. It listens on
127.0.0.1 only. Supported: ``follow``, ``previous``, ``tailLines``, ``limitBytes``. Exec, attach
and port-forward are not (a pod's address is reachable from the host directly).
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LogLookup = Callable[[str, str, str, bool], tuple[Path, Callable[[], bool]] | None]
"""``lookup(namespace, pod, container, previous)``: the log file and whether its container still runs."""


def ensure_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed serving certificate for 127.0.0.1 (made once, kept in ``folder``)."""
    cert, key = folder / "kubelet.crt", folder / "kubelet.key"
    if cert.is_file() and key.is_file():
        return cert, key
    folder.mkdir(parents=True, exist_ok=True)
    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name}@aidc-nodeagent")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(private, hashes.SHA256())
    )
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key.chmod(0o600)
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _tail(data: bytes, lines: int) -> bytes:
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


def _handler(lookup: LogLookup) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _reply(self, code: int, text: str) -> None:
            body = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
            if parts == ["healthz"]:
                self._reply(200, "ok")
                return
            if len(parts) != 4 or parts[0] != "containerLogs":
                self._reply(404, f"{url.path}: only /containerLogs/{{namespace}}/{{pod}}/{{container}} is served here")
                return
            found = lookup(parts[1], parts[2], parts[3], query.get("previous") == "true")
            if found is None:
                self._reply(404, f'container "{parts[3]}" in pod "{parts[2]}" has no log on this node')
                return
            path, running = found
            self._stream(path, running, query)

        def _stream(self, path: Path, running: Callable[[], bool], query: dict[str, str]) -> None:
            try:
                data = path.read_bytes()
            except OSError:
                data = b""
            if "tailLines" in query:
                data = _tail(data, int(query["tailLines"]))
            limit = int(query["limitBytes"]) if "limitBytes" in query else None
            if limit is not None:
                data = data[:limit]
            follow = query.get("follow") == "true"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            sent = 0
            try:
                self._chunk(data)
                sent += len(data)
                if follow:
                    with path.open("rb") as handle:
                        handle.seek(0, 2)
                        while limit is None or sent < limit:
                            more = handle.read(65536)
                            if more:
                                more = more if limit is None else more[: limit - sent]
                                self._chunk(more)
                                sent += len(more)
                            elif not running():
                                break
                            else:
                                time.sleep(0.2)
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _chunk(self, data: bytes) -> None:
            if data:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

    return Handler


class KubeletServer:
    """The endpoint, in a thread; ``port`` is the one it got."""

    def __init__(self, lookup: LogLookup, tls_dir: Path, node_name: str, port: int = 0) -> None:
        cert, key = ensure_certificate(tls_dir, node_name)
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(lookup))
        self._server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="aidc-kubelet-server")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
