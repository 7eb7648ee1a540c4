"""The publisher's side of the write API, for `smimegate directory publish|revoke`,
and the RFC 4386 discovery record an operator publishes in DNS."""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

SRV_SERVICE = "_PKIXREP._http"  # RFC 4386 §2: service PKIXREP, the access protocol as proto


class ClientError(Exception):
    """The directory could not be reached or said no; `status` is the HTTP status (0:
    never reached)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def _base(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ClientError(f"not an http(s) URL: {url!r}")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def call(url: str, path: str, token: str, body: dict[str, object],
         timeout: float = 30.0) -> dict[str, object]:
    """POST JSON to the directory with the bearer token; the JSON answer or ClientError."""
    req = urllib.request.Request(  # noqa: S310 - scheme checked in _base
        _base(url) + path, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}",
                 "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as e:
        try:
            err = json.loads(e.read())
            text = f"HTTP {e.code} {err.get('error')}: {err.get('reason')}"
        except ValueError:
            text = f"HTTP {e.code} {e.reason}"
        raise ClientError(text, e.code) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ClientError(f"cannot reach {url}: {reason}") from None
    except ValueError as e:
        raise ClientError(f"{url} answered something that is not JSON: {e}") from None


def publish(url: str, token: str, pem: str, chain: list[str]) -> dict[str, object]:
    return call(url, "/v1/certificates", token, {"certificate": pem, "chain": chain})


def revoke(url: str, token: str, fingerprint: str, reason: str) -> dict[str, object]:
    fp = fingerprint.lower().replace(":", "")
    return call(url, f"/v1/certificates/{urllib.parse.quote(fp, safe='')}/revoke", token,
                {"reason": reason})


@dataclass(frozen=True)
class SrvRecord:
    owner: str
    ttl: int
    priority: int
    weight: int
    port: int
    target: str

    def zone_line(self) -> str:
        return (f"{self.owner} {self.ttl} IN SRV {self.priority} {self.weight} {self.port} "
                f"{self.target}")


def dns_record(domain: str, url: str, *, ttl: int = 3600, priority: int = 10,
               weight: int = 0) -> tuple[SrvRecord, list[str]]:
    """The RFC 4386 SRV record telling gateways which directory serves domain, and
    warnings for the operator."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    warnings = []
    try:
        ipaddress.ip_address(parts.hostname)
        warnings.append("an SRV target must be a host name with address records, not an IP "
                        "address (RFC 2782); use the directory's DNS name")
    except ValueError:
        pass
    if parts.path.strip("/"):
        warnings.append(f"SRV carries no path: the directory must answer at the root of "
                        f"{parts.hostname}:{port}, not under {parts.path}")
    if (parts.scheme == "https") != (port == 443):
        warnings.append("gateways use https on port 443 and http on any other port; "
                        f"{url} does not follow that")
    owner = f"{SRV_SERVICE}.{domain.lower().rstrip('.')}."
    return SrvRecord(owner, ttl, priority, weight, port, parts.hostname.rstrip(".") + "."), \
        warnings
