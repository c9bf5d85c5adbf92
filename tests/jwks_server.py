"""A stand-in identity provider on loopback: an OpenID discovery document and a JWKS."""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

REALM = "/realms/mo"
DISCOVERY_PATH = f"{REALM}/.well-known/openid-configuration"
JWKS_PATH = f"{REALM}/protocol/openid-connect/certs"


class IdentityProvider:
    """Serves `keys` as its JWKS; counts requests per path; `status` set ≠ 200 fakes an outage."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.status = 200
        self.requests: Counter[str] = Counter()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def origin(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def issuer(self) -> str:
        return self.origin + REALM

    @property
    def jwks_url(self) -> str:
        return self.origin + JWKS_PATH

    def reset(self) -> None:
        self.keys = []
        self.status = 200
        self.requests.clear()

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def _document(self, path: str) -> dict[str, Any] | None:
        if path == DISCOVERY_PATH:
            return {"issuer": self.issuer, "jwks_uri": self.jwks_url}
        if path == JWKS_PATH:
            return {"keys": self.keys}
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.requests[self.path] += 1
                document = provider._document(self.path)
                status = 404 if document is None else provider.status
                body = json.dumps(document if status == 200 else {"error": "down"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


# Tokens ---------------------------------------------------------------------------------------


def sign(key: RSAKey | ECKey, claims: dict[str, Any], alg: str | None = None) -> str:
    alg = alg or ("ES256" if isinstance(key, ECKey) else "RS256")
    return jwt.encode({"alg": alg, "kid": key.kid}, claims, key, algorithms=[alg])


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    return (
        f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}.{signature}"
    )
