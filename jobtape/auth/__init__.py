"""Who may call what: principals and scopes (:mod:`.principal`), what an owner sees of the log
(:mod:`.redaction`) and bearer-token verification (:mod:`.tokens`).

The pure parts (principal, redaction) do no I/O; the HTTP side (the authentication
middleware, the scope guard, the owner check) is :mod:`jobtape.http.auth`. Rules: issue 11,
documented in docs/security.md.
"""
