"""The blocking HTTP fetch of revocation data (OCSP answers, CRLs), for crypto workers.

One place for what every revocation download must do: plain http:// only (the data is
signed; an https:// server would need its own revocation check first, RFC 5019 §5 /
RFC 5280 §8), a short timeout, no redirects (RFC 6960 A.1: a responder answers where it
was asked; a CRL is fetched from the URL its certificate names), no proxies from the
environment, and a size cap read before anything is parsed. Each failure is a
FetchFailure whose kind is a metrics label: http-error | timeout | too-large.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping


class FetchFailure(Exception):
    """A download or an answer that produced nothing usable; kind is the metrics label."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: revocation data comes from where it was asked for."""

    def redirect_request(self, req: urllib.request.Request, fp: object, code: int, msg: str,
                         headers: object, newurl: str) -> None:
        return None


def opener() -> urllib.request.OpenerDirector:
    """An opener without environment proxies and without redirects (one per client)."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def is_http_url(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower() == "http" and bool(parts.hostname)


def fetch(director: urllib.request.OpenerDirector, url: str, *, timeout: float, limit: int,
          data: bytes | None = None, headers: Mapping[str, str] | None = None) -> bytes:
    """GET url (POST data when given); the body, at most limit bytes, else FetchFailure."""
    if not is_http_url(url):
        raise FetchFailure("http-error", f"{url!r} is not an http:// URL")
    req = urllib.request.Request(  # noqa: S310 - the scheme is checked just above
        url, data=data, method="GET" if data is None else "POST", headers=dict(headers or {}))
    try:
        with director.open(req, timeout=timeout) as resp:
            body: bytes = resp.read(limit + 1)
    except urllib.error.HTTPError as e:
        raise FetchFailure("http-error", f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):
            raise FetchFailure("timeout", f"no answer within {timeout:g} s") from None
        raise FetchFailure("http-error", f"cannot connect: {e.reason}") from None
    except TimeoutError:
        raise FetchFailure("timeout", f"no answer within {timeout:g} s") from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise FetchFailure("http-error", f"{type(e).__name__}: {e}") from None
    if len(body) > limit:
        raise FetchFailure("too-large", f"answer larger than {limit} bytes")
    return body
