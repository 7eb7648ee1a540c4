"""`smimegate directory ...` as an operator types it: tokens, publish, revoke, dns-record,
flag overrides, and `directory run` as a real process stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from gateway.cli import main
from gateway.config import load_directory_config
from gateway.config.types import HostPort
from gateway.keys.demo import write_demo_pki
from tests.directory_support import DirectoryServer, http


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    write_demo_pki(d)
    return d


@pytest.fixture
def server(pki: Path, tmp_path: Path) -> Iterator[DirectoryServer]:
    config = load_directory_config(None, overrides={
        "server.data": str(tmp_path / "data"), "trust.anchors": [str(pki / "ca/root.pem")]})
    s = DirectoryServer(config).start()
    yield s
    s.stop()


def _fp(path: Path) -> str:
    return x509.load_pem_x509_certificate(path.read_bytes()).fingerprint(
        hashes.SHA256()).hex()


def test_token_publish_revoke_roundtrip(pki: Path, server: DirectoryServer, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")  # the server's own database: the CLI writes beside it
    assert main(["directory", "token", "create", "--data", data, "--domain", "Alpha.Test"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert token.startswith("sgd_")
    assert "shown once" in err
    assert main(["directory", "token", "list", "--data", data]) == 0
    listed = capsys.readouterr().out
    assert "alpha.test" in listed
    assert token not in listed
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")

    chain = pki / "alpha.test/alice-chain.pem"
    assert main(["directory", "publish", "--url", server.url, "--token-file", str(token_file),
                 str(chain)]) == 0
    assert f"published {_fp(chain)} for alice@alpha.test" in capsys.readouterr().out
    r = http("GET", server.url + "/v1/addresses/alice@alpha.test/certificates")
    assert r.status == 200

    # refused by the directory: exit status 1 and its reason
    assert main(["directory", "publish", "--url", server.url, "--token", token,
                 str(pki / "beta.test/bob-chain.pem")]) == 1
    assert "422 wrong-name" in capsys.readouterr().err

    assert main(["directory", "revoke", "--url", server.url, "--token", token, _fp(chain),
                 "--reason", "superseded"]) == 0
    assert "(superseded)" in capsys.readouterr().out
    assert http("GET", server.url + "/v1/addresses/alice@alpha.test/certificates").status == 404

    token_id = listed.split()[0]
    assert main(["directory", "token", "revoke", "--data", data, "--id", token_id]) == 0
    capsys.readouterr()
    assert main(["directory", "publish", "--url", server.url, "--token", token,
                 str(pki / "alpha.test/domain-ec-chain.pem")]) == 1
    assert "403 invalid-token" in capsys.readouterr().err
    assert main(["directory", "token", "revoke", "--data", data, "--id", token_id]) == 1


def test_client_errors(pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["directory", "publish", "--url", f"http://127.0.0.1:{port}", "--token", "t",
                 str(pki / "alpha.test/alice.pem")]) == 2
    assert "cannot reach" in capsys.readouterr().err
    assert main(["directory", "publish", "--url", "ftp://x", "--token", "t",
                 str(pki / "alpha.test/alice.pem")]) == 2
    assert "not an http(s) URL" in capsys.readouterr().err
    assert main(["directory", "publish", "--url", "http://127.0.0.1:1", "--token", "t",
                 str(pki / "nope.pem")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["directory", "token", "create", "--data", "/tmp", "--domain", "not a domain"]) \
        == 2


def test_dns_record(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["directory", "dns-record", "--domain", "alpha.test",
                 "--url", "https://directory.example.net"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "_PKIXREP._http.alpha.test. 3600 IN SRV 10 0 443 directory.example.net."
    assert not any("warning" in line for line in lines)
    assert main(["directory", "dns-record", "--domain", "alpha.test",
                 "--url", "http://127.0.0.1:8780/dir"]) == 0
    out = capsys.readouterr().out
    assert "not an IP address" in out
    assert "SRV carries no path" in out


def test_flags_override_the_file(tmp_path: Path) -> None:
    from gateway.directory.cli import _load_config, register

    toml = tmp_path / "directory.toml"
    toml.write_text('[server]\nlisten = "10.0.0.1:80"\ndata = "/var/x"\n'
                    '[trust]\nanchors = ["/etc/a.pem"]\n[ocsp]\nvalidity = "30m"\n')
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["directory", "run", "-c", str(toml), "--listen", "127.0.0.1:9",
                              "--trust", "/x.pem", "--trust", "/y.pem", "--ocsp-signer", "s",
                              "--ocsp-key", "k"])
    config = _load_config(args)
    assert config.server.listen == HostPort("127.0.0.1", 9)
    assert config.server.data == Path("/var/x")
    assert config.trust.anchors == (Path("/x.pem"), Path("/y.pem"))
    assert (config.ocsp.signers, config.ocsp.keys) == ((Path("s"),), (Path("k"),))
    assert config.ocsp.validity == 1800.0


def test_run_refuses_bad_setup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["directory", "run", "--data", str(tmp_path), "--trust",
                 str(tmp_path / "missing.pem")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["directory", "run", "--data", str(tmp_path), "--ocsp-signer", "a.pem"]) == 2
    assert "pairs" in capsys.readouterr().err
    assert main(["directory", "run", "--listen", "nonsense"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err


def test_run_as_a_process(pki: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "directory", "run", "--listen", f"127.0.0.1:{port}",
         "--data", str(tmp_path), "--trust", str(pki / "ca/root.pem"),
         "--ocsp-signer", str(pki / "ca/ocsp-chain.pem"), "--ocsp-key", str(pki / "ca/ocsp.key")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"listening on http://127.0.0.1:{port}" in line, proc.stderr
        assert http("GET", f"http://127.0.0.1:{port}/healthz").json()["status"] == "ok"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert (tmp_path / "directory.sqlite3").exists()
