"""Policy: rule compilation errors, each condition kind, decision order, fallbacks."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import ConfigError, GatewayConfig, parse_config
from gateway.policy.detectors import count_ibans, count_payment_cards, iban_valid, luhn_valid
from gateway.policy.engine import Decision, Defaults, decide_all, needs_text
from gateway.policy.facts import Attachment, MessageFacts
from gateway.policy.rules import PolicyError, compile_rules

FACTS = MessageFacts(size=10_000, subject="Quarterly [Encrypt] numbers",
                     headers=(("x-classification", "Confidential"),),
                     attachments=(Attachment("q3.xlsx", "application/vnd.ms-excel"),),
                     text="Please pay DE89 3704 0044 0532 0130 00 today.")


def one(rules: list[dict[str, object]], *, facts: MessageFacts = FACTS,
        sender: str = "alice@alpha.test", rcpt: str = "bob@beta.test",
        client: str = "10.1.2.3") -> Decision:
    return decide_all(compile_rules(rules), Defaults(), sender=sender, recipients=[rcpt],
                      facts=facts, client_address=client)[rcpt]


@pytest.mark.parametrize(
    ("condition", "matches"),
    [
        ({"sender": "*@alpha.test"}, True),
        ({"sender": ["carol@*"]}, False),
        ({"recipient": "BOB@beta.test"}, True),
        ({"sender_domain": "alpha.*"}, True),
        ({"recipient_domain": ["gamma.test"]}, False),
        ({"client_network": "10.0.0.0/8"}, True),
        ({"client_network": ["192.0.2.0/24", "::1/128"]}, False),
        ({"header": {"X-Classification": "(?i)^confidential$"}}, True),
        ({"header": {"X-Other": "."}}, False),
        ({"subject_keyword": "[encrypt]"}, True),
        ({"subject_keyword": "[secure]"}, False),
        ({"body_keyword": "PAY"}, True),
        ({"body_regex": r"\bDE\d{2}"}, True),
        ({"detector": "iban"}, True),
        ({"detector": "payment-card"}, False),
        ({"attachment_type": "application/*excel"}, True),
        ({"attachment_name": "*.pdf"}, False),
        ({"min_size": "9KB"}, True),
        ({"max_size": 9000}, False),
        ({"protected": "none"}, True),
        ({"protected": ["signed", "encrypted"]}, False),
        ({"sender": "*@alpha.test", "detector": "payment-card"}, False),  # all must hold
    ],
)
def test_each_condition(condition: dict[str, object], matches: bool) -> None:
    d = one([{"name": "r", "encrypt": "required", **condition}])
    assert (d.encrypt == "required") is matches
    assert (d.matched == ("r",)) is matches


def test_first_rule_naming_an_attribute_wins_and_rules_combine() -> None:
    d = one([
        {"name": "sign-by-sender", "sign": "required", "signing_certificate": "sender"},
        {"name": "iban", "detector": "iban", "encrypt": "required", "cipher": "aes256-gcm",
         "certificate": "user-only", "fallback": "reject"},
        {"name": "later", "encrypt": "never", "sign": "never"},
    ])
    assert (d.encrypt, d.cipher, d.certificate, d.fallback) == (
        "required", "aes256-gcm", "user-only", "reject")
    assert (d.sign, d.signing_certificate) == ("required", "sender")
    assert dict(d.why)["encrypt"] == "iban"
    assert dict(d.why)["sign"] == "sign-by-sender"
    assert d.matched == ("sign-by-sender", "iban", "later")


def test_final_stops_the_search() -> None:
    d = one([{"name": "stop", "encrypt": "never", "final": True},
             {"name": "unreached", "sign": "never"}])
    assert d.sign == "required"
    assert dict(d.why)["sign"] == "default"


def test_fallback_defaults_follow_encryption_strength() -> None:
    assert one([{"name": "r", "encrypt": "required"}]).fallback == "defer"
    assert one([{"name": "r", "encrypt": "opportunistic"}]).fallback == "plain"


def test_subject_keyword_stripping() -> None:
    d = one([{"name": "kw", "subject_keyword": "[encrypt]", "strip_subject_keyword": True,
              "encrypt": "required"}])
    assert d.strip_subject_keywords == ("[encrypt]",)


def test_per_recipient_decisions_differ() -> None:
    rules = compile_rules([{"name": "beta", "recipient_domain": "beta.test",
                            "encrypt": "required"}])
    ds = decide_all(rules, Defaults(), sender="a@alpha.test",
                    recipients=["b@beta.test", "c@gamma.test"], facts=FACTS)
    assert ds["b@beta.test"].group_key() != ds["c@gamma.test"].group_key()


def test_needs_text() -> None:
    assert needs_text(compile_rules([{"name": "x", "body_keyword": "a", "sign": "never"}]))
    assert not needs_text(compile_rules([{"name": "x", "sender": "a", "sign": "never"}]))


@pytest.mark.parametrize(
    ("rules", "words"),
    [
        ({"name": "x"}, "expected a list"),
        ([{"name": "x"}], "decides nothing"),
        ([{"name": "x", "encrypt": "always"}], "encrypt: must be one of"),
        ([{"name": "x", "sign": "never", "colour": "red"}], "unknown key(s) colour"),
        ([{"name": "x", "sign": "never", "body_regex": "("}], "bad regular expression"),
        ([{"name": "x", "sign": "never", "client_network": "10.0.0.0/40"}], "not a network"),
        ([{"name": "x", "sign": "never", "detector": "ssn"}], "detector: must be one of"),
        ([{"name": "x", "sign": "never"}, {"name": "x", "sign": "never"}], "unique"),
        ([{"name": "x", "sign": "never", "min_size": "huge"}], "min_size"),
        ([{"name": "x", "sign": "never", "final": "yes"}], "final"),
    ],
)
def test_rule_errors_are_precise(rules: object, words: str) -> None:
    with pytest.raises(PolicyError) as info:
        compile_rules(rules)
    assert words in str(info.value)


def test_rules_load_from_config_and_errors_name_the_key() -> None:
    cfg = parse_config(GatewayConfig, {"policy": {"rules": [
        {"name": "r", "recipient_domain": "beta.test", "encrypt": "required"}]}})
    assert cfg.policy.rules[0].name == "r"
    with pytest.raises(ConfigError) as info:
        parse_config(GatewayConfig, {"policy": {"rules": [{"name": "r", "encrypt": "x"}]}})
    assert info.value.key == "policy.rules"
    assert "policy.rules[0] (r).encrypt" in str(info.value)


def test_detectors() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert count_payment_cards("card 4111-1111-1111-1111, order 1234567890123") == 1
    assert count_payment_cards("0000 0000 0000 0000") == 0  # passes Luhn, is not a card
    assert iban_valid("GB82 WEST 1234 5698 7654 32")
    assert not iban_valid("GB82 WEST 1234 5698 7654 33")
    assert not iban_valid("DE89370400440532013000X")
    assert count_ibans("DE89370400440532013000 and NL91ABNA0417164300") == 2


EXPLAIN_MESSAGE = (
    b"From: alice@alpha.test\r\nTo: bob@beta.test\r\nSubject: =?utf-8?q?Zahlung_=5Bsecure=5D?=\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
    b"--x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.b64encode(b"Bitte an DE89 3704 0044 0532 0130 00 zahlen")
    + b"\r\n--x\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
    b"filename=rechnung.pdf\r\n\r\nJVBERi0=\r\n--x--\r\n"
)


def test_facts_from_a_real_message() -> None:
    from gateway.policy.extract import facts_from_message

    facts = facts_from_message(EXPLAIN_MESSAGE, want_text=True, budget=10_000)
    assert facts.subject == "Zahlung [secure]"
    assert facts.attachments == (Attachment("rechnung.pdf", "application/pdf"),)
    assert facts.text is not None
    assert "DE89" in facts.text
    assert facts.protected == "none"
    short = facts_from_message(EXPLAIN_MESSAGE, want_text=True, budget=5)
    assert short.text_truncated


def test_policy_explain_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        '[[policy.rules]]\nname = "money"\ndetector = "iban"\nencrypt = "required"\n'
        'cipher = "aes256-gcm"\n\n[[policy.rules]]\nname = "kw"\n'
        'subject_keyword = "[secure]"\nstrip_subject_keyword = true\nsign = "required"\n')
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(EXPLAIN_MESSAGE)))
    assert main(["policy", "explain", "-c", str(cfg), "--from", "alice@alpha.test",
                 "--to", "bob@beta.test", "--to", "carol@gamma.test"]) == 0
    out = capsys.readouterr().out
    assert "encrypt              required           (money)" in out
    assert "strip from Subject   [secure]" in out
    assert "matched rules        money, kw" in out
    assert "copies to send: 1" in out
