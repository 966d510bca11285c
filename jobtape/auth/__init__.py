"""Who may do what: API keys (their tokens and scopes), the principal of a request, what an
owner sees of the log, and JWT verification.

:mod:`jobtape.auth.tokens` is pure (no I/O): it makes and parses API-key tokens, hashes
them, and checks scope names. The keys themselves are events in the log (``key.created``,
``key.revoked``: :mod:`jobtape.eventlog.key_events`), folded by
:mod:`jobtape.projections.key_state` and projected to ``api_keys``
(:mod:`jobtape.projections.keys`, which also answers :func:`jobtape.projections.keys.lookup`).

:mod:`jobtape.auth.principal` (the principal and its scopes) and :mod:`jobtape.auth.redaction`
(what an owner sees of a job's events) are pure too; :mod:`jobtape.auth.jwts` verifies JWTs
(PyJWT). The HTTP side (the authentication middleware, the scope guard, the owner check) is
:mod:`jobtape.http.auth`. Rules: issue 11, docs/security.md.
"""
