"""DANE for delivery (RFC 7672): TLSA records from a real DNS server on loopback whose
answers carry the AD bit or not, and a real SMTP sink with a self-signed certificate."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.config import ConfigError
from gateway.config.schema import SpoolSection
from gateway.delivery import DeliveryAgent, Router, dane
from gateway.delivery.route import make_resolver
from gateway.envelope import Envelope
from gateway.spool import QueueEntry, Spool
from tests.delivery_sink import Received, Sink
from tests.dns_support import DnsServer, Zone
from tests.test_delivery import DATA, Gateway, delivery, gateway, run, sample, until

MX_HOST = "mail.dane.test"


@dataclass
class Server:
    cert_der: bytes
    spki_der: bytes
    context: ssl.SSLContext

    def tlsa(self, usage: int, selector: int, mtype: int) -> str:
        data = self.cert_der if selector == 0 else self.spki_der
        if mtype == 1:
            data = hashlib.sha256(data).digest()
        elif mtype == 2:
            data = hashlib.sha512(data).digest()
        return f"{usage} {selector} {mtype} {data.hex()}"


def self_signed(tmp_path: Path, name: str = MX_HOST) -> Server:
    """A self-signed server certificate no CA vouches for, and a server context."""
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    pem = tmp_path / f"{name}.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pem)
    return Server(cert.public_bytes(serialization.Encoding.DER),
                  key.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo),
                  ctx)


def ca_issued(tmp_path: Path, names: list[str], *, send_ca: bool = True,
              leaf_days: tuple[int, int] = (-1, 1), tag: str = "ta") -> tuple[Server, Server]:
    """A private CA (as a Server whose tlsa() describes the CA) and a server whose leaf
    it issued for `names`, sending the CA after its leaf or not."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{tag} CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + dt.timedelta(days=leaf_days[0]))
            .not_valid_after(now + dt.timedelta(days=leaf_days[1]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = tmp_path / f"{tag}-leaf.pem"
    pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM)
                    + (ca.public_bytes(serialization.Encoding.PEM) if send_ca else b"")
                    + key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pem)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    anchor = Server(ca.public_bytes(serialization.Encoding.DER),
                    ca_key.public_key().public_bytes(serialization.Encoding.DER, spki), ctx)
    server = Server(leaf.public_bytes(serialization.Encoding.DER),
                    key.public_key().public_bytes(serialization.Encoding.DER, spki), ctx)
    return anchor, server


@dataclass
class Outcome:
    messages: list[Received]
    commands: list[str]
    entry: QueueEntry | None  # None: delivered and removed
    queries: list[str]
    dnssec_ok: list[str]

    @property
    def reply(self) -> str:
        assert self.entry is not None
        return self.entry.state.rcpts[0].reply


async def attempt(tmp_path: Path, server: Server, tlsa: list[str], *,
                  insecure: tuple[str, ...] = (), offer_tls: bool = True,
                  require_tls: bool = False, **settings: Any) -> Outcome:
    """Send one message to b@dane.test (MX mail.dane.test) and wait for its first try.
    Every name answers with the AD bit except those in `insecure`."""
    sink = await Sink(tls_context=server.context if offer_tls else None).start()
    tlsa_owner = f"_{sink.port}._tcp.{MX_HOST}."
    records: dict[str, dict[str, list[str]]] = {
        "dane.test.": {"MX": [f"10 {MX_HOST}."]},
        f"{MX_HOST}.": {"A": ["127.0.0.1"]},
    }
    if tlsa == ["SERVFAIL"]:
        servfail = {tlsa_owner}
    else:
        servfail = set()
        records[tlsa_owner] = {"TLSA": tlsa} if tlsa else {}
    names = {"dane.test.", f"{MX_HOST}.", tlsa_owner}
    zone = Zone(records=records, servfail=servfail,
                secure={n for n in names if n.split(".")[0] not in insecure
                        and not (n == tlsa_owner and "tlsa" in insecure)})
    dns_server = await DnsServer(zone).start()
    config: dict[str, Any] = dict(dns_servers=(dns_server.hostport,), smtp_port=sink.port,
                                  tls="dane", dane=True, retry_initial=60.0)
    config.update(settings)
    section = delivery({}, **config)
    resolver = make_resolver(section)
    resolver.lifetime = 1.0  # a malformed answer is ignored until the lifetime is over
    spool = await Spool.open(SpoolSection(directory=tmp_path / "spool", control_poll=0.02))
    gw = Gateway(spool, DeliveryAgent(spool, section, hostname="gw.alpha.test",
                                      resolver=resolver))
    await gw.agent.start()
    try:
        qid = await gw.spool.enqueue(Envelope("a@alpha.test", ("b@dane.test",),
                                              require_tls=require_tls), DATA)

        def settled() -> bool:
            entry = gw.spool.get(qid)
            return entry is None or entry.state.rcpts[0].attempts > 0

        await until(settled)
        return Outcome(sink.messages, sink.commands, gw.spool.get(qid), dns_server.queries,
                       dns_server.dnssec_ok)
    finally:
        await gw.stop()
        await sink.stop()
        dns_server.close()


@pytest.mark.parametrize("records", [
    ["3 1 1"], ["3 0 1"], ["3 1 2"], ["3 0 0"], ["3 1 0"],
    ["3 1 1 wrong", "3 0 2"],  # one match among several is enough
])
def test_dane_ee_match_delivers_over_tls_to_a_self_signed_server(
        tmp_path: Path, records: list[str]) -> None:
    server = self_signed(tmp_path)
    wrong = f"3 1 1 {'00' * 32}"
    tlsa = [wrong if r.endswith("wrong") else server.tlsa(*map(int, r.split())) for r in records]
    verified = sample("smimegate_delivery_tls_total", result="dane-verified")
    usable = sample("smimegate_delivery_tlsa_total", state="usable")
    out = run_attempt(tmp_path, server, tlsa)
    assert out.entry is None
    assert [(m.tls, m.data) for m in out.messages] == [(True, DATA)]
    assert any(q.endswith(f"._tcp.{MX_HOST}. TLSA") for q in out.dnssec_ok)
    assert out.dnssec_ok == out.queries  # every question asks for DNSSEC (RFC 3225)
    assert sample("smimegate_delivery_tls_total", result="dane-verified") == verified + 1
    assert sample("smimegate_delivery_tlsa_total", state="usable") == usable + 1


def test_mismatch_defers_with_4_7_5_and_sends_nothing(tmp_path: Path) -> None:
    server = self_signed(tmp_path)
    other = self_signed(tmp_path, "other.dane.test")  # a certificate the server lacks
    failed = sample("smimegate_delivery_tls_total", result="failed")
    out = run_attempt(tmp_path, server, [other.tlsa(3, 1, 1), other.tlsa(3, 0, 0)])
    assert out.messages == []
    assert not any(c.startswith(("MAIL", "RCPT", "DATA")) for c in out.commands)
    assert out.reply.startswith("421 4.7.5")
    assert "matches none of its 2 usable TLSA record(s)" in out.reply
    assert sample("smimegate_delivery_tls_total", result="failed") == failed + 1


@pytest.mark.parametrize(("names", "record"), [
    ([MX_HOST], "2 0 1"), ([MX_HOST], "2 1 1"), ([MX_HOST], "2 0 0"), ([MX_HOST], "2 1 2"),
    (["*.dane.test"], "2 0 1"),  # a wildcard as the whole left-most label
    (["dane.test"], "2 0 1"),  # the next-hop (recipient) domain is a name too
    (["other.test", MX_HOST.upper()], "2 1 1"),
])
def test_dane_ta_match_delivers(tmp_path: Path, names: list[str], record: str) -> None:
    """The leaf is issued by a private CA the TLSA record names: the chain, the names
    and the leaf's validity are checked (RFC 7672 §3.1.2, §3.2)."""
    anchor, server = ca_issued(tmp_path, names)
    verified = sample("smimegate_delivery_tls_total", result="dane-verified")
    out = run_attempt(tmp_path, server, [anchor.tlsa(*map(int, record.split()))])
    assert [(m.tls, m.data) for m in out.messages] == [(True, DATA)]
    assert sample("smimegate_delivery_tls_total", result="dane-verified") == verified + 1


@pytest.mark.parametrize(("case", "problem"), [
    ("wrong name", "names none of mail.dane.test, dane.test"),
    ("deep wildcard", "names none of"),  # *.test does not cover mail.dane.test
    ("expired leaf", "certificate 0 of its chain is outside its validity period"),
    ("anchor not sent", "no certificate it sent matches"),
    ("another CA", "no certificate it sent matches"),
    ("leaf as anchor", "no certificate it sent matches"),  # DANE-TA names an issuer
])
def test_dane_ta_failures_defer(tmp_path: Path, case: str, problem: str) -> None:
    names = {"wrong name": ["mail.other.test"], "deep wildcard": ["*.test"]}.get(
        case, [MX_HOST])
    anchor, server = ca_issued(tmp_path, names, send_ca=case != "anchor not sent",
                               leaf_days=(-3, -2) if case == "expired leaf" else (-1, 1))
    if case == "another CA":
        anchor, _ = ca_issued(tmp_path, [MX_HOST], tag="other")
    record = (server if case == "leaf as anchor" else anchor).tlsa(2, 0, 1)
    out = run_attempt(tmp_path, server, [record])
    assert out.messages == []
    assert out.reply.startswith("421 4.7.5 DANE authentication of mail.dane.test[127.0.0.1]")
    assert problem in out.reply


def test_chain_rules_without_a_network() -> None:
    """A forged issuer (right name, wrong key) and a non-CA intermediate fail."""
    now = dt.datetime.now(dt.UTC)

    def cert(subject: str, issuer: str, key: ec.EllipticCurvePrivateKey,
             signer: ec.EllipticCurvePrivateKey, ca: bool | None) -> x509.Certificate:
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(hours=1))
             .not_valid_after(now + dt.timedelta(hours=1)))
        if ca is not None:
            b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        return b.sign(signer, hashes.SHA256())

    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(4)]
    root = cert("root", "root", keys[0], keys[0], True)
    leaf = cert(MX_HOST, "root", keys[1], keys[0], None)
    forged = cert(MX_HOST, "root", keys[1], keys[3], None)  # signed by another key
    inter_not_ca = cert("inter", "root", keys[2], keys[0], False)
    under_inter = cert(MX_HOST, "inter", keys[1], keys[2], None)
    der = [c.public_bytes(serialization.Encoding.DER) for c in
           (root, leaf, forged, inter_not_ca, under_inter)]
    ta = dane.TlsaRecord(2, 0, 1, hashlib.sha256(der[0]).digest())
    expected = dane.Expected((ta,), (MX_HOST, "dane.test"))
    assert dane.authenticate(expected, [der[1], der[0]]) is None
    assert "not issued by the next" in str(dane.authenticate(expected, [der[2], der[0]]))
    assert "not a CA" in str(dane.authenticate(expected, [der[4], der[3], der[0]]))
    assert "cannot be read" in str(dane.authenticate(expected, [der[1], b"junk"]))
    assert "no certificate" in str(dane.authenticate(expected, []))


def test_usable_tlsa_makes_starttls_mandatory(tmp_path: Path) -> None:
    server = self_signed(tmp_path)
    out = run_attempt(tmp_path, server, [server.tlsa(3, 1, 1)], offer_tls=False)
    assert out.messages == []
    assert out.reply.startswith("421 4.7.5")
    assert "offers no STARTTLS" in out.reply


@pytest.mark.parametrize("insecure", [("tlsa",), ("dane",), ("mail",)])
def test_insecure_answers_are_ignored(tmp_path: Path, insecure: tuple[str, ...]) -> None:
    """TLSA not AD, or MX or address records not AD: "dane" is opportunistic, so a
    record the certificate does not match changes nothing (RFC 7672 §2.2)."""
    server = self_signed(tmp_path)
    wrong = f"3 1 1 {'00' * 32}"
    out = run_attempt(tmp_path, server, [wrong], insecure=insecure)
    assert [m.tls for m in out.messages] == [True]
    if insecure != ("tlsa",):  # an insecure MX host's TLSA records are not even asked
        assert not any(q.endswith(" TLSA") for q in out.queries)
    out = run_attempt(tmp_path, server, [wrong], insecure=insecure, offer_tls=False)
    assert [m.tls for m in out.messages] == [False]


def test_no_tlsa_records_is_opportunistic(tmp_path: Path) -> None:
    server = self_signed(tmp_path)
    absent = sample("smimegate_delivery_tlsa_total", state="absent")
    out = run_attempt(tmp_path, server, [], offer_tls=False)
    assert [m.tls for m in out.messages] == [False]
    assert sample("smimegate_delivery_tlsa_total", state="absent") == absent + 1


def test_require_tls_copy_accepts_a_dane_match(tmp_path: Path) -> None:
    """A "tls-only" copy needs verified TLS: a DANE match counts, a self-signed
    certificate without one does not (PKIX then fails)."""
    server = self_signed(tmp_path)
    out = run_attempt(tmp_path, server, [server.tlsa(3, 1, 1)], require_tls=True,
                      tls="opportunistic")
    assert [m.tls for m in out.messages] == [True]
    pkix = run_attempt(tmp_path, server, [], require_tls=True, tls="opportunistic")
    assert pkix.messages == []
    assert pkix.reply.startswith("421 4.7.5")
    insecure = run_attempt(tmp_path, server, [server.tlsa(3, 1, 1)], require_tls=True,
                           tls="opportunistic", insecure=("tlsa",))
    assert insecure.messages == []  # an unvalidated record vouches for nothing


def test_verify_with_usable_tlsa_is_dane_only(tmp_path: Path) -> None:
    """RFC 7672 §2.2: usable records are the domain's word on how to authenticate it; a
    certificate PKIX would accept does not make up for a mismatch."""
    anchor, server = ca_issued(tmp_path, [MX_HOST])
    ca_file = tmp_path / "anchor.pem"
    ca_file.write_bytes(x509.load_der_x509_certificate(anchor.cert_der).public_bytes(
        serialization.Encoding.PEM))
    pkix = sample("smimegate_delivery_tls_total", result="pkix-verified")
    out = run_attempt(tmp_path, server, [], tls="verify", tls_ca_file=ca_file)
    assert [m.tls for m in out.messages] == [True]
    assert sample("smimegate_delivery_tls_total", result="pkix-verified") == pkix + 1
    out = run_attempt(tmp_path, server, [f"3 1 1 {'00' * 32}"], tls="verify",
                      tls_ca_file=ca_file)
    assert out.messages == []
    assert out.reply.startswith("421 4.7.5 DANE authentication")


def test_unusable_records_mean_mandatory_unauthenticated_tls(tmp_path: Path) -> None:
    """Records present, none usable (PKIX usages, unknown fields): TLS is
    mandatory but not authenticated (RFC 7672 §2.2, §3.1.3); no traceback anywhere."""
    server = self_signed(tmp_path)
    h = "ab" * 32
    bogus = [f"0 0 1 {h}", f"1 1 1 {h}", f"4 1 1 {h}", f"255 1 1 {h}", f"2 2 1 {h}",
             f"3 2 1 {h}", "3 1 3 abcd", "3 1 255 00"]
    unusable = sample("smimegate_delivery_tlsa_total", state="unusable")
    unauthenticated = sample("smimegate_delivery_tls_total", result="unauthenticated")
    out = run_attempt(tmp_path, server, bogus)
    assert [m.tls for m in out.messages] == [True]
    assert sample("smimegate_delivery_tlsa_total", state="unusable") == unusable + 1
    assert sample("smimegate_delivery_tls_total", result="unauthenticated") \
        == unauthenticated + 1
    out = run_attempt(tmp_path, server, bogus, offer_tls=False)
    assert out.messages == []
    assert out.reply.startswith("421 4.7.5")


@pytest.mark.parametrize("tlsa", [
    ["\\# 5 030101abcd"],  # a SHA2-256 "digest" of 2 octets: the answer is malformed
    ["\\# 2 0301"],  # too short to be a TLSA record at all
    ["SERVFAIL"],  # what a validating resolver says of a bogus answer
])
def test_tlsa_lookup_failure_defers_without_traceback(
        tmp_path: Path, tlsa: list[str], caplog: pytest.LogCaptureFixture) -> None:
    server = self_signed(tmp_path)
    failed = sample("smimegate_delivery_tlsa_total", state="failed")
    with caplog.at_level(logging.INFO, logger="smimegate.delivery"):
        out = run_attempt(tmp_path, server, tlsa)
    assert out.messages == []
    assert out.commands == []
    assert out.reply.startswith("451 4.4.3 TLSA lookup of _")
    assert sample("smimegate_delivery_tlsa_total", state="failed") == failed + 1
    assert not any(r.exc_info for r in caplog.records)


def test_explicit_next_hop_never_uses_dane(tmp_path: Path) -> None:
    async def body() -> None:
        server = self_signed(tmp_path)
        sink = await Sink(tls_context=server.context).start()
        dns_server = await DnsServer(Zone(records={}, secure={"dane.test."})).start()
        gw = await gateway(tmp_path, delivery({"dane.test": sink.port}, tls="dane", dane=True,
                                              dns_servers=(dns_server.hostport,)))
        await gw.spool.enqueue(Envelope("a@alpha.test", ("b@dane.test",)), DATA)
        await until(lambda: gw.spool.stats()["total"] == 0)
        await gw.stop()
        await sink.stop()
        dns_server.close()
        assert [m.tls for m in sink.messages] == [True]  # opportunistic
        assert dns_server.queries == []
    run(body)


def test_dane_policy_needs_the_dane_setting() -> None:
    with pytest.raises(ConfigError, match=r"delivery\.tls: \"dane\" needs delivery\.dane"):
        Router(delivery({}, tls="dane"))
    with pytest.raises(ConfigError, match=r"delivery\.tls_policy: 'beta\.test' has \"dane\""):
        Router(delivery({}, tls_policy=(("beta.test", "dane"),)))
    Router(delivery({}, tls_policy=(("beta.test", "dane"),), dane=True))


def test_matching_rules() -> None:
    cert = b"0\x82 not a certificate"
    exact = dane.TlsaRecord(3, 0, 0, cert)
    sha256 = dane.TlsaRecord(3, 0, 1, hashlib.sha256(cert).digest())
    sha512 = dane.TlsaRecord(3, 0, 2, hashlib.sha512(cert).digest())
    for record in (exact, sha256, sha512):
        assert dane.matches((record,), cert) == record
        assert dane.matches((record,), cert + b"x") is None
    # selector 1 needs the key: an unreadable certificate matches no SPKI record
    assert dane.matches((dane.TlsaRecord(3, 1, 0, cert),), cert) is None
    assert dane.classify([]).state == dane.ABSENT
    mixed = dane.classify([exact, dane.TlsaRecord(1, 0, 1, sha256.data)])
    assert (mixed.state, mixed.records, mixed.ignored) == (dane.USABLE, (exact,), 1)
    assert dane.unusable_because(dane.TlsaRecord(3, 0, 0, b"")) == "empty association data"
    assert dane.tlsa_name("mx.beta.test.", 25) == "_25._tcp.mx.beta.test."


def run_attempt(tmp_path: Path, server: Server, tlsa: list[str], **kw: Any) -> Outcome:
    holder: list[Outcome] = []

    async def body() -> None:
        spool_dir = tmp_path / f"try{len(list(tmp_path.glob('try*')))}"
        spool_dir.mkdir()
        holder.append(await attempt(spool_dir, server, tlsa, **kw))
    run(body)
    return holder[0]
