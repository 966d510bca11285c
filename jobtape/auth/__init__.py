"""Who may do what: API keys (their tokens and scopes) and, later, the principal of a request.

:mod:`jobtape.auth.tokens` is pure (no I/O): it makes and parses API-key tokens, hashes
them, and checks scope names. The keys themselves are events in the log (``key.created``,
``key.revoked``: :mod:`jobtape.eventlog.key_events`), folded by
:mod:`jobtape.projections.key_state` and projected to ``api_keys``
(:mod:`jobtape.projections.keys`, which also answers :func:`jobtape.projections.keys.lookup`).
"""
