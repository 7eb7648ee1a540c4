"""The inbound path does each piece of work once: one parse per layer, From read only for
mail with a signer, revocation counts drained without a collect and still applied in
the front end.

The verdicts and outputs are compared with the path as it was written on bytes (detect,
decrypt and verify each parsing the message themselves), kept here as the reference:
the single-parse path must agree with it on every vector, byte for byte.
"""

from __future__ import annotations

import collections
import dataclasses
import email.utils
import importlib
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from gateway.config.schema import (
    InboundRevocationSection,
    InboundSection,
    KeysSection,
    PolicySection,
)
from gateway.envelope import Envelope
from gateway.inbound import metrics as inbound_metrics
from gateway.inbound import open as inbound_open
from gateway.inbound.open import Opened, from_addresses, open_message
from gateway.keys import KeyRing, load_certificates, load_identity
from gateway.keys.demo import write_demo_pki
from gateway.lookup import cache as certcache
from gateway.lookup._cache_py import CertCache
from gateway.outbound.context import Loaded, WorkerContext, load
from gateway.outbound.job import process_with
from gateway.revocation import RevocationPolicy, Verdict, authres
from gateway.revocation import metrics as revocation_metrics
from gateway.smime import SMIMEError, decrypt, detect, encrypt, sign, verify
from gateway.smime import message as message_module
from gateway.workers.jobs import Job, Result

# The modules themselves (gateway.smime exports functions of the same names).
decrypt_module = importlib.import_module("gateway.smime.decrypt")
detect_module = importlib.import_module("gateway.smime.detect")
verify_module = importlib.import_module("gateway.smime.verify")


@pytest.fixture(scope="module", name="pki")
def pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("parse-once-pki")
    write_demo_pki(d)
    return d


@pytest.fixture(name="cache")
def cache_fixture() -> Iterator[CertCache]:
    cache = certcache.CertCache.create(
        f"smimegate-test-parse-once-{os.getpid()}-{uuid.uuid4().hex[:8]}", 64, 1 << 16)
    yield cache
    cache.unlink()
    cache.close()


def beta(pki: Path, cache: CertCache, qdir: Path, mode: str = "off", **inbound: Any) -> Loaded:
    b = pki / "beta.test"
    keys = KeysSection(certificates=(b / "domain-rsa-chain.pem", b / "bob-chain.pem"),
                       private_keys=(b / "domain-rsa.key", b / "bob.key"),
                       trust_anchors=(pki / "ca/root.pem",))
    section = dataclasses.replace(InboundSection(), **inbound)
    # mode soft with no server and no AIA: every check is answered "unknown" at once,
    # without a network, and counted (revocation_verdicts, revocation_ocsp_requests).
    revocation = InboundRevocationSection(mode=mode, use_aia=False)
    return load(WorkerContext(keys, PolicySection(), cache.name, ("beta.test",), 3600.0,
                              "info", section, revocation, "mx.beta.test", qdir))


def plain(sender: str = "alice@alpha.test", newline: str = "\r\n") -> bytes:
    return (f"From: {sender}\r\nTo: bob@beta.test\r\nSubject: Hi\r\n"
            "Message-ID: <p1@alpha.test>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain\r\n\r\nHello Bob.{newline}Bye.\r\n").encode()


def signer(pki: Path, who: str = "domain-rsa") -> Any:
    a = pki / "alpha.test"
    return load_identity(a / f"{who}-chain.pem", a / f"{who}.key")


def to(pki: Path, data: bytes, holder: str = "beta.test/bob.pem") -> bytes:
    return encrypt(data, load_certificates(pki / holder)[:1])


def vectors(pki: Path) -> dict[str, bytes]:
    """One message per shape the inbound path tells apart."""
    s, alice = signer(pki), signer(pki, "alice")
    signed = sign(plain(), s)
    return {
        "plain": plain(),
        "signed": signed,
        "opaque": sign(plain(), alice, opaque=True),
        "signed+encrypted": to(pki, signed),
        "encrypted": to(pki, plain()),
        "encrypted to the domain": to(pki, signed, "beta.test/domain-rsa.pem"),
        "sign, encrypt, sign": sign(to(pki, signed), s),
        "signer not From": to(pki, sign(plain("mallory@gamma.test"), s)),
        "tampered": to(pki, signed.replace(b"Hello Bob.", b"Hello Rob.")),
        "not for us": to(pki, signed, "alpha.test/alice.pem"),
        "garbage CMS": (b"From: alice@alpha.test\r\nMIME-Version: 1.0\r\n"
                        b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n"
                        b"Content-Transfer-Encoding: base64\r\n\r\nAAAA\r\n"),
        "bad header": b"From alice\r\n\r\nbody\r\n",
        "header protection": sign(b"MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n"
                                  b"\r\n" + plain(), s),
        "bare LF inside": to(pki, sign(plain(), s).replace(b"Hello Bob.\r\n",
                                                            b"Hello Bob.\n")),
    }


def reference_open(data: bytes, keys: KeyRing, anchors: Sequence[x509.Certificate],
                   policy: RevocationPolicy) -> Opened:
    """open_message as written before it parsed once: every step on bytes."""
    current = unsigned = data
    decrypted = False
    verdict: Verdict | None = None
    for _ in range(inbound_open.MAX_LAYERS):
        try:
            layers = detect(current).layers
        except SMIMEError as e:
            verdict = verdict or policy.verdict(None, e)
            break
        outer = layers[0] if layers else inbound_open._claimed(
            message_module.parse_message(current))
        if outer in detect_module.ENCRYPTED_LAYERS:
            try:
                current = unsigned = decrypt(current, keys)
            except SMIMEError as e:
                return Opened(data, data, None, decrypted, f"{e.code}: {e}")
            decrypted = True
            continue
        if outer in detect_module.SIGNED_LAYERS and verdict is None:
            try:
                result = verify(current, anchors=anchors, revocation=policy.check)
            except SMIMEError as e:
                verdict = policy.verdict(None, e)
                break
            verdict = policy.verdict(result)
            unsigned = result.message
            if len(layers) > 1 and layers[1] in detect_module.ENCRYPTED_LAYERS:
                current = unsigned
                continue
        break
    if verdict is None:
        verdict = policy.verdict(None)
    return Opened(current, unsigned, inbound_open._match_from(verdict, current, None),
                  decrypted)


def test_single_parse_path_agrees_with_the_bytes_path(pki: Path, cache: CertCache,
                                                      tmp_path: Path) -> None:
    state = beta(pki, cache, tmp_path)
    seen: set[str] = set()
    for name, data in vectors(pki).items():
        args = (state.keyring, state.anchors, state.revocation)
        got, want = open_message(data, *args), reference_open(data, *args)
        assert got == want, name
        seen.add(got.verdict.result if got.verdict is not None else "undecryptable")
    # The vectors reach every verdict the path can give without a revocation server.
    assert seen == {"none", "pass", "fail", "neutral", "undecryptable"}


def test_decrypt_hands_back_exactly_what_parsing_its_output_gives(pki: Path) -> None:
    b = pki / "beta.test"
    keys = KeyRing([load_identity(b / "bob-chain.pem", b / "bob.key")])
    for data in (to(pki, plain()), to(pki, sign(plain(), signer(pki)))):
        out, parsed = decrypt_module.decrypt_parsed(message_module.parse_message(data), keys)
        assert out == decrypt(data, keys)
        assert parsed == message_module.parse_message(out)


Parses = collections.Counter[bytes]


@pytest.fixture(name="parses")
def parses_fixture(monkeypatch: pytest.MonkeyPatch) -> Parses:
    """Every parse_message call of the inbound path, counted by the bytes it parsed."""
    counted: Parses = collections.Counter()
    real = message_module.parse_message

    def counting(data: bytes) -> message_module.Message:
        counted[data] += 1
        return real(data)

    for module in (inbound_open, detect_module, decrypt_module, verify_module):
        monkeypatch.setattr(module, "parse_message", counting)
    return counted


@pytest.mark.parametrize("name", ["signed+encrypted", "encrypted", "signed", "opaque",
                                  "sign, encrypt, sign", "header protection"])
def test_each_layer_is_parsed_once(pki: Path, cache: CertCache, tmp_path: Path,
                                   parses: Parses, name: str) -> None:
    data = vectors(pki)[name]
    state = beta(pki, cache, tmp_path)
    parses.clear()
    opened = open_message(data, state.keyring, state.anchors, state.revocation)
    assert opened.verdict is not None
    assert parses[data] == 1  # the message as received
    twice = {k[:60]: n for k, n in parses.items() if n > 1}
    assert twice == {}
    if opened.verdict.result != "pass":
        return
    # Passing mail: the delivered message was parsed on the way (or made parsed by
    # decrypt) and its From read then; reading it again costs no parse of its own.
    before = sum(parses.values())
    from_addresses(opened.message)
    assert sum(parses.values()) == before


def test_the_decrypted_layer_is_not_parsed_again(pki: Path, cache: CertCache,
                                                  tmp_path: Path, parses: Parses) -> None:
    state = beta(pki, cache, tmp_path)
    opened = open_message(vectors(pki)["signed+encrypted"], state.keyring, state.anchors,
                          state.revocation)
    assert opened.decrypted
    assert parses[opened.message] == 0  # made by decrypt_parsed, never re-read from bytes


@pytest.fixture(name="addresses_read")
def addresses_read_fixture(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every reading of a From field (inbound.open._remember_from: the only one)."""
    calls: list[bytes] = []
    real = inbound_open._remember_from

    def counting(message: bytes, msg: message_module.Message) -> list[str]:
        calls.append(message)
        return real(message, msg)

    monkeypatch.setattr(inbound_open, "_remember_from", counting)
    return calls


def run(state: Loaded, data: bytes) -> Result:
    return process_with(state, Job(Envelope("alice@alpha.test", ("bob@beta.test",),
                                            "127.0.0.1"), data))


def test_from_is_not_read_for_mail_without_a_signer(pki: Path, cache: CertCache,
                                                    tmp_path: Path,
                                                    addresses_read: list[bytes]) -> None:
    state = beta(pki, cache, tmp_path, harvest=True, on_none="deliver")
    for name in ("encrypted", "plain"):
        (out,) = run(state, vectors(pki)[name]).outputs
        assert b"smime=none" in out.data
    assert addresses_read == []


def test_from_is_read_once_for_passing_mail(pki: Path, cache: CertCache, tmp_path: Path,
                                            addresses_read: list[bytes]) -> None:
    # The signer check, Authentication-Results, harvest and learning all want From.
    state = beta(pki, cache, tmp_path, harvest=True, learn_capabilities=True)
    data = to(pki, sign(plain(), signer(pki, "alice")))
    r = run(state, data)
    (out,) = r.outputs
    assert b"smime=pass" in out.data
    assert b"body.smime-identifier=alice@alpha.test" in out.data
    assert r.harvested
    assert r.harvested[0][0] == "alice@alpha.test"
    assert len(addresses_read) == 1


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_revocation_counts_still_reach_the_front_end(pki: Path, cache: CertCache,
                                                     tmp_path: Path) -> None:
    state = beta(pki, cache, tmp_path, mode="soft")
    revocation_metrics.drain()  # what earlier tests counted in this process
    data = sign(plain(), signer(pki))
    verdicts = {"mode": "soft", "status": "unknown"}
    before = _sample("smimegate_revocation_verdicts_total", verdicts)
    results = [run(state, data) for _ in range(2)]
    for r in results:
        assert r.outputs
        assert b"smime=pass" in r.outputs[0].data
        counted = {(n, labels): v for n, labels, v in r.counts}
        assert counted[("revocation_verdicts", ("soft", "unknown"))] == 1.0  # not again
    for r in results:
        inbound_metrics.apply(r.counts)  # what the pool's on_counts hook does
    after = _sample("smimegate_revocation_verdicts_total", verdicts)
    # The worker counted 2 in this process, the front end's apply added the same 2.
    assert after - before == 4.0


def test_drain_sees_increments_from_other_threads_exactly_once() -> None:
    revocation_metrics.drain()
    def count() -> None:
        for _ in range(500):
            revocation_metrics.CRL_CACHE_HITS.labels("crl").inc()

    threads = [threading.Thread(target=count) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert revocation_metrics.drain() == (("revocation_crl_cache_hits", ("crl",), 2000.0),)
    assert revocation_metrics.drain() == ()


# --- the fast paths give what the general code gives -----------------------------------

_ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
_atoms = st.text(alphabet=_ATEXT, min_size=1, max_size=6)
_addr = st.builds(lambda a, b: f"{a}@{b}", _atoms.map(lambda s: s.replace("'", "..")),
                  _atoms)
_from_values = st.one_of(
    _addr,
    st.builds(lambda words, sp, a: " ".join(words) + sp + f"<{a}>",
              st.lists(_atoms, min_size=1, max_size=3), st.sampled_from(["", " ", "  "]),
              _addr),
    st.text(alphabet=_ATEXT + ' .@<>",;:()[]\\\té', max_size=30),  # anything else
)


@settings(max_examples=400, deadline=None)
@given(values=st.lists(_from_values, min_size=0, max_size=2))
def test_from_fast_path_agrees_with_getaddresses(values: list[str]) -> None:
    data = "".join(f"From: {v}\r\n" for v in values).encode("latin-1") + \
        b"Subject: x\r\n\r\nbody\r\n"
    fields = [h.value for h in message_module.parse_message(data).headers
              if h.key == "from"]
    want = [a.lower() for _, a in email.utils.getaddresses(fields) if "@" in a]
    assert from_addresses(data) == want


def _reference_clean(text: str, ascii_only: bool) -> str:
    out: list[str] = []
    for ch in text:
        if ch.isspace():
            out.append(" ")
        elif not ch.isprintable():
            continue
        elif ascii_only and ord(ch) > 0x7E:
            out.append("?")
        else:
            out.append(ch)
    cleaned = " ".join("".join(out).split())
    return cleaned if len(cleaned) <= authres.MAX_TEXT else \
        cleaned[:authres.MAX_TEXT - 3] + "..."


def _reference_words(text: str, special: str) -> list[str]:
    words = []
    for word in text.split(" "):
        pieces: list[str] = []
        size = 0
        for ch in word:
            piece = "\\" + ch if ch in special else ch
            if size + len(piece) > authres.MAX_WORD - 3:
                pieces.append("...")
                break
            pieces.append(piece)
            size += len(piece)
        words.append("".join(pieces))
    return words


_header_text = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=400),
    st.text(max_size=80))


@settings(max_examples=400, deadline=None)
@given(text=_header_text, ascii_only=st.booleans())
def test_authres_fast_paths_agree_with_the_character_loops(text: str,
                                                           ascii_only: bool) -> None:
    assert authres._clean(text, ascii_only) == _reference_clean(text, ascii_only)
    for special in ('"\\', "()\\"):
        assert authres._escaped_words(text, special) == _reference_words(text, special)


def test_authres_token_is_rfc2045_token() -> None:
    for c in range(0x110):
        want = 0x20 < c < 0x7F and chr(c) not in authres._TSPECIALS
        assert bool(authres._TOKEN.fullmatch(chr(c))) == want, c
