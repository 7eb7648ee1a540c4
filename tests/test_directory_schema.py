"""Schemathesis against the directory's own /openapi.json: generated requests to every
operation find no server error, and every error answer is our JSON error body.

Kept short and deterministic: few examples per operation, derandomized."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from gateway.config import load_directory_config
from gateway.directory.openapi import SPEC
from gateway.keys.demo import write_demo_pki
from tests.directory_support import DirectoryServer, http


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirectoryServer]:
    pki: Path = tmp_path_factory.mktemp("pki")
    write_demo_pki(pki)
    config = load_directory_config(None, overrides={
        "server.data": str(tmp_path_factory.mktemp("data")),
        "trust.anchors": [str(pki / "ca/root.pem")],
        "ocsp.signers": [str(pki / "ca/ocsp-chain.pem")],
        "ocsp.keys": [str(pki / "ca/ocsp.key")],
        "ratelimit.auth_failures": 100_000})
    s = DirectoryServer(config).start()
    token = s.token("alpha.test")
    r = http("POST", s.url + "/v1/certificates",
             (pki / "alpha.test/alice-chain.pem").read_text(),
             {"Authorization": f"Bearer {token}",
              "Content-Type": "application/pem-certificate-chain"})
    assert r.status == 201
    yield s
    s.stop()


@schemathesis.serializer("application/pem-certificate-chain", "application/pkix-cert",
                         "application/ocsp-request")
def _raw(ctx: object, value: object) -> bytes:
    """Certificates and OCSP requests go over the wire as they are (fuzzed bytes)."""
    return value if isinstance(value, bytes) else str(value).encode()


# The schema the server serves is this very object (checked below), so it can be loaded
# at collection time, before any server runs.
schema = schemathesis.openapi.from_dict(SPEC)


def test_served_schema_is_the_spec(directory: DirectoryServer) -> None:
    assert http("GET", directory.url + "/openapi.json").json() == SPEC


@schema.parametrize()
@settings(max_examples=8, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_error(case: schemathesis.Case,  # type: ignore[type-arg]
                         directory: DirectoryServer) -> None:
    response = case.call(base_url=directory.url)
    assert response.status_code < 500, (case.method, case.formatted_path, response.text)
    ctype = response.headers.get("content-type", [""])
    ctype_text = ctype[0] if isinstance(ctype, list) else str(ctype)
    if response.status_code >= 400 and ctype_text.startswith("application/json"):
        body = json.loads(response.content)
        assert body["status"] == response.status_code
        assert body["error"]
        assert body["reason"]
