"""The directory: a public certificate lookup server with an OCSP responder.

Gateways publish their certificates here (authenticated per domain) and look up
everyone else's (public, cacheable, batchable reads). It also answers "is this signer
still good?" as an RFC 6960 OCSP responder and through `POST /v1/verify`, and serves
RFC 4387 certificate store queries (`/search.cgi`) for software that is not ours.
The directory is not trusted for authenticity (DESIGN.md, trust model): it only refuses
what would never validate, and every reader validates again.

Where things are: app (state, middleware, serve), api_read / api_write / api_check /
rfc4387 / openapi (the HTTP surface), records (what is stored, read off a certificate),
storage/ (the interface, SQLite, PostgreSQL, migrations), ocsp (the responder),
verify + revocation (/v1/verify and CA revocation fetching), tokens + ratelimit (write
auth), readcache, metrics, client + cli (`smimegate directory ...`).
"""
