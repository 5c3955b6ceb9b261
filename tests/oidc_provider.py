"""A real local stand-in for a hosted OpenID Connect provider (Auth0, Keycloak, Clerk...).

An aiohttp server on 127.0.0.1 (a free port) that publishes signing keys the way a provider
does, and mints tokens with them::

    async with OidcProvider() as provider:
        srv = await start_server(
            auth="jwt",
            oidc_issuer=provider.issuer,
            oidc_audience=provider.audience,      # "boardcast-test"
            oidc_jwks_url=provider.jwks_url,
        )
        token = provider.issue("user-1", extra_claims={"name": "Ann", "email": "ann@example.test"})
        ...  # Authorization: Bearer <token>, or /ws?access_token=<token>

- ``GET /.well-known/jwks.json``: the published keys (an RSA 2048 key for RS256 and an EC P-256
  key for ES256 from the start; ``rsa_kid`` / ``ec_kid`` name them). ``fetches`` counts these
  requests, ``fetched`` is an event set by each one.
- ``GET /.well-known/openid-configuration``: ``issuer`` and ``jwks_uri``.
- ``issue(sub, alg=..., kid=..., aud=..., iss=..., exp_in=..., extra_claims=..., headers=...)``
  mints a signed token; every field can be made wrong for negative tests (``exp_in`` negative
  for an expired token, ``extra_claims={"nbf": ...}`` for one not yet valid, ``headers``
  merged into the JOSE header last).
- ``rotate(alg)`` adds and publishes a new key and returns its kid (``retire(kid)``
  unpublishes one); ``new_key(alg, publish=False)`` makes a key that signs but is not in the
  JWKS (a token "from someone else").
- ``fail_with = 500`` makes the JWKS endpoint answer that status (None: normal again);
  ``hold()`` / ``release()`` keep JWKS answers waiting (to test concurrent fetches);
  ``stop()`` takes the server away (connection refused), ``start()`` brings it back on the
  same port.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

DEFAULT_AUDIENCE = "boardcast-test"
_kids = itertools.count(1)


@dataclass
class SigningKey:
    kid: str
    alg: str  # RS256 | ES256
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    published: bool = True

    def jwk(self) -> dict[str, Any]:
        """The public half as a JWK, with kid, alg and use as providers publish them."""
        public = self.private_key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def make_key(alg: str, kid: str | None = None, *, published: bool = True) -> SigningKey:
    kid = kid or f"{alg.lower()}-{next(_kids)}-{uuid.uuid4().hex[:6]}"
    if alg == "RS256":
        private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = rsa.generate_private_key(
            public_exponent=65537, key_size=2048
        )
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"the provider signs with RS256 or ES256, not {alg}")
    return SigningKey(kid, alg, private, published)


class OidcProvider:
    """A real OIDC provider on 127.0.0.1 for tests; see the module docstring."""

    def __init__(self, *, audience: str = DEFAULT_AUDIENCE, issuer_path: str = "") -> None:
        self.audience = audience
        self._issuer_path = issuer_path  # e.g. "/realms/test" for a Keycloak-shaped issuer
        self.keys: list[SigningKey] = [make_key("RS256"), make_key("ES256")]
        self.rsa_kid = self.keys[0].kid
        self.ec_kid = self.keys[1].kid
        self.fetches = 0
        self.fetched = asyncio.Event()
        self.fail_with: int | None = None
        self.extra_jwks: list[dict[str, Any]] = []  # published as they are (odd or bad keys)
        self._gate: asyncio.Event | None = None
        self._port = 0
        self._runner: web.AppRunner | None = None

    # --- lifetime -------------------------------------------------------------------------

    async def start(self) -> OidcProvider:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._jwks)
        app.router.add_get("/.well-known/openid-configuration", self._configuration)
        if self._issuer_path:
            app.router.add_get(f"{self._issuer_path}/.well-known/openid-configuration", self._configuration)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        self._port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._runner = runner
        return self

    async def stop(self) -> None:
        self.release()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> OidcProvider:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- addresses ------------------------------------------------------------------------

    @property
    def base(self) -> str:
        assert self._port, "start() the provider first"
        return f"http://127.0.0.1:{self._port}"

    @property
    def issuer(self) -> str:
        return self.base + self._issuer_path

    @property
    def jwks_url(self) -> str:
        return f"{self.base}/.well-known/jwks.json"

    # --- keys -----------------------------------------------------------------------------

    def key(self, kid: str) -> SigningKey:
        for k in self.keys:
            if k.kid == kid:
                return k
        raise KeyError(kid)

    def new_key(self, alg: str = "RS256", *, publish: bool = False, kid: str | None = None) -> SigningKey:
        """A key this provider can sign with; in the JWKS only if ``publish``."""
        k = make_key(alg, kid, published=publish)
        self.keys.append(k)
        return k

    def rotate(self, alg: str = "RS256") -> str:
        """Publish a new key for ``alg`` (the old ones stay published) and return its kid."""
        return self.new_key(alg, publish=True).kid

    def retire(self, kid: str) -> None:
        self.key(kid).published = False

    def public_pem(self, kid: str | None = None) -> bytes:
        return self.key(kid or self.rsa_kid).public_pem()

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.jwk() for k in self.keys if k.published] + self.extra_jwks}

    # --- tokens ---------------------------------------------------------------------------

    def issue(
        self,
        sub: str,
        *,
        alg: str = "RS256",
        kid: str | None = None,
        aud: str | list[str] | None = None,
        iss: str | None = None,
        exp_in: float | None = 300,
        extra_claims: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
    ) -> str:
        """A token signed with the key ``kid`` (default: the first key for ``alg``).

        ``aud``/``iss`` default to this provider's audience and issuer; ``exp_in=None`` leaves
        ``exp`` out. ``extra_claims`` override any claim (a value of None removes it);
        ``headers`` are merged into the JOSE header (``{"kid": None}`` removes the kid).
        """
        key = self.key(kid) if kid else next(k for k in self.keys if k.alg == alg)
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": iss if iss is not None else self.issuer,
            "aud": aud if aud is not None else self.audience,
            "sub": sub,
            "iat": now,
        }
        if exp_in is not None:
            claims["exp"] = now + int(exp_in)
        claims.update(extra_claims or {})
        claims = {k: v for k, v in claims.items() if v is not None}
        header = {k: v for k, v in {"kid": key.kid, **(headers or {})}.items() if v is not None}
        return jwt.encode(claims, key.private_key, algorithm=key.alg, headers=header)

    # --- failure modes --------------------------------------------------------------------

    def hold(self) -> None:
        """Keep JWKS answers waiting until :meth:`release`."""
        self._gate = asyncio.Event()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    # --- handlers -------------------------------------------------------------------------

    async def _jwks(self, request: web.Request) -> web.Response:
        self.fetches += 1
        self.fetched.set()
        gate = self._gate
        if gate is not None:
            await gate.wait()
        if self.fail_with is not None:
            return web.json_response({"error": "provider failure"}, status=self.fail_with)
        return web.json_response(self.jwks(), headers={"Cache-Control": "public, max-age=300"})

    async def _configuration(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "jwks_uri": self.jwks_url,
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                "subject_types_supported": ["public"],
                "response_types_supported": ["code"],
            }
        )
