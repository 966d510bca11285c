"""Authentication, scopes, ownership and rate limits of the HTTP API (issue 11; docs/security.md).

One principal (:class:`jobtape.auth.principal.Principal`) per request, resolved by
:class:`AuthMiddleware` for every route except:

- ``/health`` (route ``opt`` ``exclude_from_auth``): a load balancer's probe carries no token;
- the API docs (``/schema``, ``/schema/openapi.json``, ``/schema-assets/...``): the OpenAPI
  document is not secret (it describes the routes, never data), so a developer reads it
  without a token;
- ``GET/HEAD /api/storage/download`` *with a* ``signature`` (local storage): the signed URL is
  a capability. A poll hands it only to the job's owner, and a browser uses it as
  ``<audio src>``, which cannot send a bearer header; the HMAC and the deadline authorise it
  (:mod:`jobtape.http.downloads`). Without a signature the route needs a principal like any other.

By ``--auth`` mode (``Settings.auth_mode``):

- ``off``: ``local:<owner>`` with every scope, the owner being the ``X-Client-Id`` header
  (``anonymous`` by default): the behaviour before issue 11; the actor of appended events stays ``api``.
- ``trusted-proxy``: ``proxy:<owner>`` (submit, read, cancel; no ``admin``) when the peer
  address is in ``Settings.trusted_proxies`` and sends ``X-Client-Id``; anything else is 401.
- ``required``: ``Authorization: Bearer <token>``. A token of the API-key form (``jtk_...``)
  is looked up (:func:`jobtape.projections.keys.lookup`; revoked -> 401), a verified key reused for
  :data:`KEY_CACHE_TTL_S` seconds without a lookup (:meth:`Authenticator.cached_key`): ``key:<key id>``;
  any other token is checked as a JWT (:mod:`jobtape.auth.jwts`): ``jwt:<sub>``.
  ``X-Client-Id`` is ignored: the owner is the key's or the token's ``sub``.

A missing or invalid credential is 401 with ``WWW-Authenticate: Bearer`` (RFC 6750 §3) and
the API's error body; a JWT whose keys (JWKS) cannot be fetched is 503 with ``Retry-After``
(the identity provider is down, the token may be good); a route's missing scope is 403 naming it (:func:`check_scope`, from the
route's ``opt["scope"]``). A job, asset or preview of another owner is answered exactly like
a missing one (404, the same body) unless the principal holds ``admin``
(:func:`require_visible`, the one owner check every route calls), so ids leak nothing.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import anyio.to_thread
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException, ServiceUnavailableException, TooManyRequestsException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware
from litestar.middleware._utils import should_bypass_middleware
from litestar.middleware.rate_limit import RateLimitConfig, RateLimitMiddleware
from litestar.openapi.spec import Components, OpenAPI, OpenAPIMediaType, OpenAPIResponse, Reference, SecurityScheme
from litestar.types import ASGIApp, Receive, Scope, Send

from jobtape.auth import jwts, tokens
from jobtape.auth import principal as auth
from jobtape.config import Settings
from jobtape.http import creation

__all__ = [
    "API_KEY_PREFIX",
    "EXCLUDE_FROM_AUTH",
    "FAST_PATH_OPT",
    "JWKS_RETRY_AFTER_S",
    "KEY_CACHE_TTL_S",
    "KEY_REFRESH_AFTER",
    "SCOPE_OPT",
    "SIGNED_LINK_OPT",
    "ApiKeyLike",
    "AuthMiddleware",
    "Authenticator",
    "KeyLookup",
    "PrincipalRateLimitMiddleware",
    "check_scope",
    "document_security",
    "principal_of",
    "rate_limit_config",
    "require_visible",
]

#: What an API-key token starts with (:data:`jobtape.auth.tokens.TOKEN_PREFIX`); any other bearer token is tried as a JWT.
API_KEY_PREFIX = tokens.TOKEN_PREFIX
#: The route ``opt`` key naming the scope a route needs (``opt={"scope": "jobs:read"}``).
SCOPE_OPT = "scope"
#: ``Retry-After`` (seconds) of the 503 answered when the JWKS cannot be fetched.
JWKS_RETRY_AFTER_S = 5
#: The route ``opt`` key of routes served without a principal (``/health``).
EXCLUDE_FROM_AUTH = "exclude_from_auth"
#: The route ``opt`` key of a route's fast path (:data:`jobtape.http.jobs.FastPath`): called with the
#: principal once authentication and the scope passed; it answers the request, or leaves it to the route.
FAST_PATH_OPT = "fast_path"
#: The route ``opt`` key of a route a signed link authorises (``?signature=``): the local download route.
SIGNED_LINK_OPT = "signed_link"
#: The API docs: not secret, served without a token (see the module docstring).
_DOCS = r"^/schema(/|-assets/|$)"
#: The principal of a request a signed link authorises: no owner, no scope.
_SIGNED_LINK = auth.Principal(id="signed-link", owner="", scopes=frozenset())
_BEARER = {"WWW-Authenticate": "Bearer"}
_BEARER_HELP = "send Authorization: Bearer <API key or JWT>"
#: How many ``--auth off`` owners' principals :meth:`Authenticator.local` keeps.
_LOCAL_CACHE = 1024
#: Seconds a verified API key's principal is reused without reading ``api_keys`` again
#: (:meth:`Authenticator.cached_key`): a key revoked while a server runs is refused at the
#: latest this long after the revoke commits (docs/security.md).
KEY_CACHE_TTL_S = 1.0
#: How many verified API keys :meth:`Authenticator.cached_key` keeps (then the cache starts over).
_KEY_CACHE = 4096
#: The part of :data:`KEY_CACHE_TTL_S` after which the next request with a cached key looks it up
#: again while the others keep being served from the cache (:meth:`Authenticator.cached_key`).
KEY_REFRESH_AFTER = 0.5


class ApiKeyLike(Protocol):
    """What a key lookup answers (:class:`jobtape.projections.keys.ApiKey`)."""

    @property
    def key_id(self) -> str:
        """The key's public id (16 hex digits)."""

    @property
    def owner(self) -> str:
        """The owner the key acts for."""

    @property
    def scopes(self) -> frozenset[str]:
        """The key's scopes."""

    @property
    def revoked(self) -> bool:
        """Whether the key was revoked (a request with it is 401)."""


#: ``lookup(token) -> key or None`` (blocking: one read of the ``api_keys`` projection).
KeyLookup = Callable[[str], ApiKeyLike | None]


class _KeyEntry:
    """A verified API key in :meth:`Authenticator.cached_key`'s cache (times in the authenticator's monotonic seconds).

    Attributes:
        principal: the key's principal.
        expires_at: when the entry stops being served: the start of the lookup that found the key valid, plus the TTL.
        refresh_at: when the next request looks the key up again (then set to ``expires_at``: one request refreshes).
    """

    __slots__ = ("expires_at", "principal", "refresh_at")

    def __init__(self, principal: auth.Principal, expires_at: float, refresh_at: float) -> None:
        self.principal, self.expires_at, self.refresh_at = principal, expires_at, refresh_at


def _unauthorized(message: str) -> NotAuthorizedException:
    return NotAuthorizedException(detail=message, headers=dict(_BEARER))


class Authenticator:
    """Resolves a request's principal for one ``--auth`` mode (see the module docstring).

    Args:
        settings: ``auth_mode``, ``trusted_proxies`` and the JWT settings.
        key_lookup: finds an API key by its token; ``None``: API keys are refused (401).
        jwt_verifier: checks JWTs; ``None`` (no key source configured): JWTs are refused (401).
        key_cache_ttl_s: seconds a verified API key is reused without a lookup
            (:meth:`cached_key`; default :data:`KEY_CACHE_TTL_S`; ``0``: every request looks
            its key up).
        clock: monotonic seconds (``time.monotonic``; a test's fake clock).
    """

    def __init__(
        self,
        settings: Settings,
        key_lookup: KeyLookup | None = None,
        jwt_verifier: jwts.JwtVerifier | None = None,
        *,
        key_cache_ttl_s: float = KEY_CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mode = settings.auth_mode
        self.networks = [ipaddress.ip_network(cidr, strict=False) for cidr in settings.trusted_proxies]
        self.key_lookup = key_lookup
        self.jwt_verifier = jwt_verifier
        self.key_cache_ttl_s = key_cache_ttl_s
        self.clock = clock
        self._local: dict[str, auth.Principal] = {}
        self._keys: dict[bytes, _KeyEntry] = {}

    @classmethod
    def from_settings(cls, settings: Settings, key_lookup: KeyLookup | None = None) -> Authenticator:
        """An authenticator with the JWT verifier ``settings`` configure (none without a key source).

        Raises:
            ValueError: the JWT settings cannot make a verifier (a short secret, a bad key file).
        """
        verifier = None
        if settings.jwt_secret or settings.jwt_public_key_file or settings.jwt_jwks_url:
            verifier = jwts.JwtVerifier.from_settings(
                issuer=str(settings.jwt_issuer),
                audience=str(settings.jwt_audience),
                secret=settings.jwt_secret,
                public_key_file=settings.jwt_public_key_file,
                jwks_url=settings.jwt_jwks_url,
            )
        return cls(settings, key_lookup, verifier)

    async def principal(self, connection: ASGIConnection[Any, Any, Any, Any]) -> auth.Principal:
        """The request's principal.

        Raises:
            NotAuthorizedException: 401 (``WWW-Authenticate: Bearer``): no valid credential.
            ServiceUnavailableException: 503 with ``Retry-After``: the JWKS cannot be fetched.
        """
        if self.mode == "off":
            return self.local(connection.headers.get("x-client-id"))
        if self.mode == "trusted-proxy":
            return self._proxy(connection)
        return await self._bearer(connection.headers.get("authorization"))

    def local(self, client_id: str | None) -> auth.Principal:
        """The ``--auth off`` principal of an ``X-Client-Id`` header (:func:`jobtape.auth.principal.local`).

        Principals are immutable, so the same one serves every request of an owner; at most
        :data:`_LOCAL_CACHE` owners are kept (then each is made per request).
        """
        owner = creation.owner_of(client_id)
        found = self._local.get(owner)
        if found is None:
            found = auth.local(owner)
            if len(self._local) < _LOCAL_CACHE:
                self._local[owner] = found
        return found

    def cached_key(self, header: str | None) -> auth.Principal | None:
        """The principal of an ``Authorization: Bearer jtk_...`` header whose key was verified in the last :attr:`key_cache_ttl_s` seconds.

        No read and no thread hop: a dict lookup by the token's sha256 (the token itself is
        not kept). ``None`` for anything else (no header, a JWT, a key not verified lately, an
        unknown or revoked key: those are never kept), which the caller resolves with
        :meth:`principal` (a lookup). What the cache means for a revoked key: a server that
        verified the key less than :attr:`key_cache_ttl_s` seconds before the revoke committed
        may serve it until that time is up; then the next request looks it up and is 401.

        Refreshed ahead: once an entry is :data:`KEY_REFRESH_AFTER` of the TTL old, the FIRST
        request to ask gets ``None`` (it looks the key up; a valid key's entry then counts
        again from that lookup's start, a revoked one is dropped) while the others keep getting
        the cached principal until the entry's own deadline. A key in steady use is so looked
        up by one request about twice a second, instead of by every request in flight when
        its entry expired (32 lookups in worker threads at once under ``bench/poll.py``, each
        waiting 20-80 ms for the GIL: the poll's p99). The deadline is never extended without
        a lookup, so the revocation bound above is unchanged; if the refreshing request's
        lookup fails (a store error), the entry still ends at its deadline.

        Args:
            header: the request's ``Authorization`` header, or ``None``.
        """
        if not header or not self._keys:
            return None
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token.startswith(API_KEY_PREFIX):
            return None
        found = self._keys.get(_token_digest(token))
        if found is None:
            return None
        now = self.clock()
        if now >= found.expires_at:
            return None
        if now >= found.refresh_at:
            found.refresh_at = found.expires_at  # this request refreshes; the others are served until the deadline
            return None
        return found.principal

    def _remember_key(self, token: str, principal: auth.Principal, looked_up_at: float) -> None:
        """Keep ``principal`` until ``looked_up_at`` + the TTL: the time the lookup STARTED, so a
        revoke that commits while the lookup runs (or before the event loop resumes) is still
        honoured within the TTL of its commit."""
        if self.key_cache_ttl_s <= 0:
            return
        expires_at = looked_up_at + self.key_cache_ttl_s
        if self.clock() >= expires_at:
            return
        digest = _token_digest(token)
        if len(self._keys) >= _KEY_CACHE and digest not in self._keys:
            self._keys.clear()
        self._keys[digest] = _KeyEntry(principal, expires_at, looked_up_at + self.key_cache_ttl_s * KEY_REFRESH_AFTER)

    def _proxy(self, connection: ASGIConnection[Any, Any, Any, Any]) -> auth.Principal:
        peer = connection.client.host if connection.client else ""
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            raise _unauthorized("this server accepts requests only from its trusted proxies") from None
        if not any(address in network for network in self.networks):
            raise _unauthorized("this server accepts requests only from its trusted proxies")
        owner = (connection.headers.get("x-client-id") or "").strip()
        if not owner:
            raise _unauthorized("the trusted proxy must name the owner in X-Client-Id")
        return auth.proxy(owner)

    async def _bearer(self, header: str | None) -> auth.Principal:
        scheme, _, token = (header or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized(f"this route needs a token; {_BEARER_HELP}")
        if token.startswith(API_KEY_PREFIX):
            if self.key_lookup is None:
                raise _unauthorized("this server does not accept API keys")
            looked_up_at = self.clock()  # before the read: the cache's TTL counts from here
            key = await anyio.to_thread.run_sync(self.key_lookup, token)
            if key is None:
                self._keys.pop(_token_digest(token), None)
                raise _unauthorized("the API key is not valid")
            if key.revoked:
                self._keys.pop(_token_digest(token), None)
                raise _unauthorized(f"the API key {key.key_id} was revoked")
            principal = auth.Principal(id=f"key:{key.key_id}", owner=key.owner, scopes=auth.parse_scopes(key.scopes))
            self._remember_key(token, principal, looked_up_at)
            return principal
        if self.jwt_verifier is None:
            raise _unauthorized("this server accepts only API keys (jtk_...), and no JWT key is configured")
        try:
            return await anyio.to_thread.run_sync(self.jwt_verifier.verify, token)
        except jwts.InvalidToken as exc:
            raise _unauthorized(str(exc)) from None
        except jwts.KeySetUnavailable as exc:
            raise ServiceUnavailableException(detail=str(exc), headers={"Retry-After": str(JWKS_RETRY_AFTER_S)}) from None


class AuthMiddleware(AbstractAuthenticationMiddleware):
    """Litestar authentication middleware: sets ``request.user`` to the :class:`Principal` (see the module docstring)."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        super().__init__(app, exclude=_DOCS, exclude_from_auth_key=EXCLUDE_FROM_AUTH)
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI callable: :meth:`authenticate_request` on every request Litestar's rules do not exclude.

        The exclusions are :class:`AbstractAuthenticationMiddleware`'s (``/health``'s route
        ``opt``, the docs' path pattern, ``OPTIONS``). In ``--auth off`` mode the principal
        comes straight from the ``X-Client-Id`` header of the ASGI scope, without building a
        connection object (the poll's common path, ``bench/poll.py``); so does, in
        ``--auth required`` mode, the principal of an API key verified in the last
        :data:`KEY_CACHE_TTL_S` seconds (:meth:`Authenticator.cached_key`). Anything else runs
        :meth:`authenticate_request`.

        Raises:
            NotAuthorizedException: 401.
            PermissionDeniedException: 403, the route's scope is missing.
        """
        if should_bypass_middleware(
            exclude_http_methods=self.exclude_http_methods,
            exclude_opt_key=self.exclude_opt_key,
            exclude_path_pattern=self.exclude,
            scope=scope,
            scopes=self.scopes,
        ):
            await self.app(scope, receive, send)
            return
        handler = scope.get("route_handler")
        principal: auth.Principal | None = None
        if handler is None or not handler.opt.get(SIGNED_LINK_OPT):
            mode = self.authenticator.mode
            if mode == "off":
                principal = self.authenticator.local(_header(scope, b"x-client-id"))
            elif mode == "required":
                principal = self.authenticator.cached_key(_header(scope, b"authorization"))
        if principal is not None:
            if handler is not None:
                check_scope(principal, handler.opt.get(SCOPE_OPT))
                fast = handler.opt.get(FAST_PATH_OPT)
                if fast is not None and await fast(scope, receive, send, principal):
                    return
            scope["user"] = principal
            scope["auth"] = None
        else:
            result = await self.authenticate_request(ASGIConnection(scope))
            scope["user"] = result.user
            scope["auth"] = result.auth
        await self.app(scope, receive, send)

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        """Resolve the principal (a signed link's request: none needed).

        Raises:
            NotAuthorizedException: 401.
        """
        handler = connection.scope.get("route_handler")
        if handler is not None and handler.opt.get(SIGNED_LINK_OPT) and "signature" in connection.query_params:
            return AuthenticationResult(user=_SIGNED_LINK, auth=None)
        principal = await self.authenticator.principal(connection)
        if handler is not None:
            check_scope(principal, handler.opt.get(SCOPE_OPT))
        return AuthenticationResult(user=principal, auth=None)


def _token_digest(token: str) -> bytes:
    """The key of a token in :meth:`Authenticator.cached_key`'s cache: its sha256, so the token itself is not kept."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lowercase) in an ASGI scope, decoded as latin-1 (as Litestar's ``Headers``).

    ASGI servers send lowercase names; any other case matches too, as in Litestar's ``Headers``.
    """
    for key, value in scope["headers"]:
        if key == name or key.lower() == name:
            return value.decode("latin-1")
    return None


def principal_of(request: ASGIConnection[Any, Any, Any, Any]) -> auth.Principal:
    """The principal :class:`AuthMiddleware` resolved for ``request``.

    Raises:
        NotAuthorizedException: 401, the route was served without authentication (a bug
            of the route's ``opt``, answered safely).
    """
    user = request.scope.get("user")
    if not isinstance(user, auth.Principal):
        raise _unauthorized(f"this route needs a token; {_BEARER_HELP}")
    return user


def check_scope(principal: auth.Principal, needed: str | None) -> None:
    """The principal must hold the route's scope (its ``opt["scope"]``; ``None``: the route needs none).

    Checked by :class:`AuthMiddleware` right after it resolves the principal, rather than by a
    Litestar guard: Litestar runs a synchronous guard in a worker thread on a copy of the
    route handler for every request, which cost the poll a third of its rate (``bench/poll.py``).

    Raises:
        PermissionDeniedException: 403 naming the missing scope.
    """
    if needed is None or principal.allows(needed):
        return
    held = " ".join(sorted(principal.scopes)) or "none"
    raise PermissionDeniedException(detail=f"this route needs the scope {needed!r}; the caller holds {held}")


def require_visible(principal: auth.Principal, owner: str, missing: Exception) -> None:
    """The one owner check: raise ``missing`` (the route's own not-found error) unless ``principal`` may see ``owner``'s data.

    A job, asset or preview of another owner is answered exactly like a missing id (the seed
    contract's 404 body), unless the principal holds ``admin`` (issue 11).

    Raises:
        Exception: ``missing``.
    """
    if not principal.may_see(owner):
        raise missing


class PrincipalRateLimitMiddleware(RateLimitMiddleware):
    """Litestar's rate-limit middleware keyed by the principal's id, adding ``Retry-After`` (seconds) to its 429."""

    def cache_key_from_request(self, request: Request[Any, Any, Any]) -> str:
        """``PrincipalRateLimitMiddleware::<principal id>`` (the peer address before authentication)."""
        user = request.scope.get("user")
        who = user.id if isinstance(user, auth.Principal) else f"peer:{request.client.host if request.client else ''}"
        return f"{type(self).__name__}::{who}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Apply the limit; a refused request's 429 carries ``Retry-After`` = ``RateLimit-Reset``."""
        try:
            await super().__call__(scope, receive, send)
        except TooManyRequestsException as exc:
            headers = dict(exc.headers or {})
            reset = headers.get(self.config.rate_limit_reset_header_key)
            headers["Retry-After"] = reset if reset and reset.isdigit() and int(reset) > 0 else "1"
            raise TooManyRequestsException(
                detail=f"too many requests; at most {self.max_requests} per {self.unit} for each caller; retry after {headers['Retry-After']} s",
                headers=headers,
            ) from None


def _rate_limited(request: Request[Any, Any, Any]) -> bool:
    return bool(request.scope["route_handler"].opt.get(SCOPE_OPT) == auth.JOBS_SUBMIT)


def rate_limit_config(rule: tuple[str, int]) -> RateLimitConfig:
    """The per-principal rate limit of the submit routes (those whose ``opt["scope"]`` is ``jobs:submit``).

    Args:
        rule: ``(unit, count)``, from ``Settings.rate_limit_rule``.
    """
    return RateLimitConfig(
        rate_limit=(rule[0], rule[1]),  # type: ignore[arg-type]
        check_throttle_handler=_rate_limited,
        middleware_class=PrincipalRateLimitMiddleware,
    )


def auth_middleware(authenticator: Authenticator) -> DefineMiddleware:
    """:class:`AuthMiddleware` with ``authenticator``, for ``Litestar(middleware=[...])``."""
    return DefineMiddleware(AuthMiddleware, authenticator=authenticator)


_ERROR_REF = "#/components/schemas/ErrorBody"


def document_security(
    document: OpenAPI,
    *,
    bearer: bool,
    rate_limited: bool,
    open_paths: Sequence[str] = ("/health",),
    link_paths: Sequence[str] = (),
) -> None:
    """Declare authentication in the built OpenAPI document (``--auth required``/``trusted-proxy``).

    Adds a 401 to every operation but those of ``open_paths``, a 403 to every operation, and a
    429 to the submit operations when ``rate_limited``; with ``bearer``, the ``bearer`` HTTP
    security scheme, required by every operation but ``open_paths``'.

    Args:
        document: the app's document (changed in place).
        bearer: declare the bearer scheme (``required`` mode).
        rate_limited: the submit routes have a rate limit (429 with ``Retry-After``).
        open_paths: paths served without credentials.
        link_paths: paths a signed link authorises without a bearer token (the local download
            route): their security is the bearer scheme *or* none.
    """
    if bearer:
        components = document.components if document.components is not None else Components()
        components.security_schemes = {
            **(components.security_schemes or {}),
            "bearer": SecurityScheme(
                type="http",
                scheme="bearer",
                description="An API key (jtk_..., `jobtape keys create`) or a JWT of the configured issuer and audience",
            ),
        }
        document.components = components
    for path, item in (document.paths or {}).items():
        for method in ("get", "put", "post", "delete", "patch", "head"):
            operation = getattr(item, method, None)
            if operation is None:
                continue
            responses = operation.responses if operation.responses is not None else {}
            if path in open_paths:
                if bearer:
                    operation.security = []
                continue
            responses.setdefault("401", _error_response("No valid credential (WWW-Authenticate: Bearer)"))
            responses.setdefault("403", _error_response("The caller's token lacks the scope this route needs"))
            if rate_limited and method == "post" and _is_submit(path):
                responses.setdefault(
                    "429", _error_response("Too many requests (the per-caller rate limit, or the active-job quota); see Retry-After")
                )
            operation.responses = responses
            if bearer:
                operation.security = [{"bearer": []}, {}] if path in link_paths else [{"bearer": []}]


_SUBMIT_PATHS = ("/api/jobs", "/api/audio/ingest", "/api/audio/edit/preview", "/api/audio/edit/save", "/api/storage/upload")


def _is_submit(path: str) -> bool:
    return path in _SUBMIT_PATHS


def _error_response(description: str) -> OpenAPIResponse:
    return OpenAPIResponse(description=description, content={"application/json": OpenAPIMediaType(schema=Reference(ref=_ERROR_REF))})
