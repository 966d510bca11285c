"""JWT verification for ``--auth required`` (PyJWT does the cryptography and the claim checks).

A JWT is the end-user token the web app mints. The verifier is configured with exactly one
key source, and the algorithms follow from it (a token never chooses its own; ``none`` is
never accepted):

- ``JOBTAPE_JWT_SECRET``: HS256 with that shared secret (at least 32 bytes, RFC 7518 §3.2);
- ``JOBTAPE_JWT_PUBLIC_KEY_FILE``: a PEM public key; RSA -> RS256, Ed25519 -> EdDSA;
- ``JOBTAPE_JWT_JWKS_URL``: a JWKS document (RFC 7517) fetched by :class:`jwt.PyJWKClient`
  (cached; refetched when a token names an unknown ``kid``); RS256 and EdDSA keys.

Every token must carry ``iss`` (== ``JOBTAPE_JWT_ISSUER``), ``aud`` (containing
``JOBTAPE_JWT_AUDIENCE``), ``exp`` (in the future; 30 s leeway for clock skew), and ``sub``
(the owner). ``scope`` is a space-separated list (RFC 8693 §4.2); unknown scopes are ignored.
The principal is ``jwt:<sub>``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from jobtape.auth import principal as auth

__all__ = ["LEEWAY_S", "MIN_SECRET_BYTES", "InvalidToken", "JwtVerifier", "KeySetUnavailable"]

#: Seconds of clock skew allowed on ``exp`` (and ``nbf``/``iat`` when present).
LEEWAY_S = 30
#: The least length of an HS256 secret, in bytes (RFC 7518 §3.2: a key of the hash's size or larger).
MIN_SECRET_BYTES = 32
_REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]


class InvalidToken(Exception):
    """The bearer token is not a valid JWT for this server; the message says why (never the token)."""


class KeySetUnavailable(Exception):
    """The JWKS cannot be fetched (the identity provider is unreachable, times out or errs).

    Not the caller's fault: the API answers 503 with ``Retry-After``, not 401, so a client
    does not throw away a good token. The message names neither the token nor the JWKS URL.
    """


@dataclasses.dataclass(frozen=True)
class JwtVerifier:
    """Checks JWTs against one key source and the expected issuer and audience.

    Build it with :meth:`from_settings`. :meth:`verify` may block (a JWKS fetch): call it
    from a worker thread.

    Attributes:
        issuer: the required ``iss``.
        audience: the required ``aud``.
        key: the HS256 secret (bytes) or the public key object; ``None`` with a JWKS client.
        algorithms: the algorithms accepted for ``key``.
        jwks: the JWKS client, or ``None``.
    """

    issuer: str
    audience: str
    key: Any = None
    algorithms: tuple[str, ...] = ()
    jwks: jwt.PyJWKClient | None = None

    @classmethod
    def from_settings(
        cls,
        *,
        issuer: str,
        audience: str,
        secret: str | None = None,
        public_key_file: Path | None = None,
        jwks_url: str | None = None,
    ) -> JwtVerifier:
        """A verifier for the one key source given.

        Raises:
            ValueError: not exactly one source, a secret shorter than :data:`MIN_SECRET_BYTES`,
                or a key file that is not a PEM RSA or Ed25519 public key (the message says which).
        """
        sources = [name for name, value in (("secret", secret), ("public key file", public_key_file), ("JWKS URL", jwks_url)) if value]
        if len(sources) != 1:
            raise ValueError(f"JWT verification needs exactly one key source, not {len(sources)} ({', '.join(sources) or 'none'})")
        if secret:
            if len(secret.encode()) < MIN_SECRET_BYTES:
                raise ValueError(f"JOBTAPE_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes (HS256, RFC 7518 section 3.2)")
            return cls(issuer, audience, key=secret.encode(), algorithms=("HS256",))
        if public_key_file is not None:
            try:
                key = load_pem_public_key(Path(public_key_file).read_bytes())
            except (OSError, ValueError) as exc:
                raise ValueError(f"JOBTAPE_JWT_PUBLIC_KEY_FILE is not a readable PEM public key: {exc}") from None
            if isinstance(key, rsa.RSAPublicKey):
                return cls(issuer, audience, key=key, algorithms=("RS256",))
            if isinstance(key, ed25519.Ed25519PublicKey):
                return cls(issuer, audience, key=key, algorithms=("EdDSA",))
            raise ValueError("JOBTAPE_JWT_PUBLIC_KEY_FILE must hold an RSA or Ed25519 public key")
        return cls(issuer, audience, algorithms=("RS256", "EdDSA"), jwks=jwt.PyJWKClient(str(jwks_url), cache_keys=True, timeout=10))

    def verify(self, token: str) -> auth.Principal:
        """The principal of a valid token: ``jwt:<sub>``, owner ``sub``, the known scopes of ``scope``.

        Raises:
            InvalidToken: a bad signature, an algorithm other than the key's (``none``
                included), a missing, expired or mismatched ``exp``/``iss``/``aud``/``sub``,
                or a JWKS that lacks the token's key.
            KeySetUnavailable: the JWKS cannot be fetched now (unreachable, timeout, HTTP error).
        """
        try:
            if self.jwks is not None:
                signing = self.jwks.get_signing_key_from_jwt(token)
                key, algorithms = signing.key, [a for a in self.algorithms if a == signing.algorithm_name]
            else:
                key, algorithms = self.key, list(self.algorithms)
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": _REQUIRED_CLAIMS, "verify_signature": True},
            )
        except jwt.PyJWKClientConnectionError:
            raise KeySetUnavailable("the identity provider's signing keys (JWKS) cannot be fetched right now; retry later") from None
        except jwt.PyJWKClientError as exc:
            raise InvalidToken(f"the token's signing key cannot be found: {exc}") from None
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"the token is not valid: {exc}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip():
            raise InvalidToken("the token's sub claim is empty")
        scope = claims.get("scope", "")
        scopes = auth.parse_scopes(scope if isinstance(scope, str) else " ".join(map(str, scope)) if isinstance(scope, list) else "")
        return auth.Principal(id=f"jwt:{sub}", owner=sub, scopes=scopes)
