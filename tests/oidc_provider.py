"""A stand-in OpenID provider for sign-in tests: discovery, authorize, token, JWKS.

Written by hand on http.server (like tests/jwks_server.py) because the flow under test is
small and fixed: the authorization endpoint approves `user` at once and redirects back
with a one-time code; the token endpoint checks the code, client, redirect URI and PKCE
(S256) verifier and answers a signed access token (the broker's owner and roles claims)
and an ID token (with the nonce). authlib's server classes need a grant/model layer
that would be larger than this file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc.jwk import ECKey

from tests.jwks_server import sign

REALM = "/realms/mo"


@dataclass
class User:
    """Who the provider signs in: the broker's owner claim and realm roles."""

    owner: str
    roles: list[str] = field(default_factory=list)


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str | None


class SignInProvider:
    """Serves one client (`client_id`, `client_secret` or none) and signs in `user`."""

    def __init__(self, client_id: str, client_secret: str | None = None) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.key = ECKey.generate_key("P-256", {"kid": "sign-in-1"})
        self.user = User("00000000-0000-4000-8000-0000000000aa")
        self.grants: dict[str, Grant] = {}
        self.token_requests: list[dict[str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def issuer(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}{REALM}"

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def discovery(self) -> dict[str, Any]:
        base = self.issuer + "/protocol/openid-connect"
        return {
            "issuer": self.issuer,
            "authorization_endpoint": base + "/auth",
            "token_endpoint": base + "/token",
            "jwks_uri": base + "/certs",
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["ES256"],
        }

    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str], dict[str, Any]]:
        """Approve the test user at once: a redirect back with a code, or an error."""
        if (
            query.get("client_id") != self.client_id
            or query.get("response_type") != "code"
            or query.get("code_challenge_method") != "S256"
            or not query.get("code_challenge")
        ):
            return 400, {}, {"error": "invalid_request"}
        code = secrets.token_urlsafe(16)
        self.grants[code] = Grant(
            self.client_id, query["redirect_uri"], query["code_challenge"], query.get("nonce")
        )
        back = {"code": code, "state": query.get("state", "")}
        return 302, {"Location": f"{query['redirect_uri']}?{urlencode(back)}"}, {}

    def token(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        self.token_requests.append(form)
        grant = self.grants.pop(form.get("code", ""), None)
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.startswith("Basic "):
            client_id, _, secret = base64.b64decode(authorization[6:]).decode().partition(":")
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        if (
            grant is None
            or client_id != grant.client_id
            or (self.client_secret is not None and secret != self.client_secret)
            or form.get("redirect_uri") != grant.redirect_uri
            or challenge.rstrip(b"=").decode() != grant.challenge
        ):
            return 400, {"error": "invalid_grant"}
        now = int(time.time())
        common = {"iss": self.issuer, "iat": now, "exp": now + 300, "sub": self.user.owner}
        access = {
            **common,
            "aud": "account",
            "azp": self.client_id,
            "uuid": self.user.owner,
            "realm_access": {"roles": self.user.roles},
        }
        identity = {**common, "aud": self.client_id, "nonce": grant.nonce}
        return 200, {
            "access_token": sign(self.key, access),
            "id_token": sign(self.key, identity),
            "token_type": "Bearer",
            "expires_in": 300,
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {key: values[0] for key, values in parse_qs(url.query).items()}
                base = REALM + "/protocol/openid-connect"
                if url.path == REALM + "/.well-known/openid-configuration":
                    self._answer(200, {}, provider.discovery())
                elif url.path == base + "/certs":
                    self._answer(200, {}, {"keys": [provider.key.as_dict(private=False)]})
                elif url.path == base + "/auth":
                    self._answer(*provider.authorize(query))
                else:
                    self._answer(404, {}, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length).decode()
                form = {key: values[0] for key, values in parse_qs(body).items()}
                if urlsplit(self.path).path == REALM + "/protocol/openid-connect/token":
                    status, document = provider.token(form, self.headers.get("Authorization"))
                    self._answer(status, {}, document)
                else:
                    self._answer(404, {}, {"error": "not found"})

            def _answer(self, status: int, headers: dict[str, str], document: Any) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
