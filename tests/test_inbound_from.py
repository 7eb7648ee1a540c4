"""The From addresses of an opened message (gateway/inbound/open.py), read up to four
times per message, come from a one-entry memo that must never answer for another
message."""

from __future__ import annotations

from gateway.inbound.open import from_address, from_addresses


def _message(sender: str) -> bytes:
    return (f"From: Someone <{sender}>\r\nTo: bob@beta.test\r\n\r\nhello\r\n").encode()


def test_each_message_gets_its_own_from() -> None:
    alice, mallory = _message("Alice@alpha.test"), _message("mallory@evil.test")
    for _ in range(2):
        assert from_addresses(alice) == ["alice@alpha.test"]
        assert from_address(alice) == "alice@alpha.test"
        assert from_addresses(mallory) == ["mallory@evil.test"]
    # equal bytes in another object: read afresh, same answer
    assert from_addresses(bytes(bytearray(alice))) == ["alice@alpha.test"]


def test_the_answer_is_a_copy() -> None:
    message = _message("alice@alpha.test")
    first = from_addresses(message)
    first.append("mallory@evil.test")
    assert from_addresses(message) == ["alice@alpha.test"]


def test_several_and_none() -> None:
    both = b"From: a@alpha.test, b@beta.test\r\nFrom: c@gamma.test\r\n\r\nx\r\n"
    assert from_addresses(both) == ["a@alpha.test", "b@beta.test", "c@gamma.test"]
    assert from_addresses(b"To: bob@beta.test\r\n\r\nx\r\n") == []
    assert from_address(b"From: undisclosed\r\n\r\nx\r\n") == ""
