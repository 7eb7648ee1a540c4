"""Built-in content detectors: payment card numbers (Luhn) and IBANs (ISO 13616 mod 97).

Each detector scans decoded text in linear time and reports how many valid candidates it
found; a candidate that fails its checksum does not count, so order numbers and phone
numbers do not trigger encryption.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# 13–19 digits, optionally grouped by single spaces or dashes (as people write them).
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
# Two letters, two check digits, 11–30 alphanumerics, optionally in groups of four.
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")

# ISO 13616 lengths for the countries that use IBAN most; unknown countries are checked
# by checksum alone.
_IBAN_LENGTH = {
    "AT": 20, "BE": 16, "CH": 21, "CZ": 24, "DE": 22, "DK": 18, "ES": 24, "FI": 18,
    "FR": 27, "GB": 22, "IE": 22, "IT": 27, "LU": 20, "NL": 18, "NO": 15, "PL": 28,
    "PT": 25, "SE": 24,
}


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of ISO/IEC 7812."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters → 10..35, mod 97 == 1."""
    iban = iban.replace(" ", "").upper()
    expected = _IBAN_LENGTH.get(iban[:2])
    if expected is not None and len(iban) != expected:
        return False
    rearranged = iban[4:] + iban[:4]
    remainder = 0
    for ch in rearranged:
        value = ch if ch.isdigit() else str(ord(ch) - 55)
        for digit in value:
            remainder = (remainder * 10 + ord(digit) - 48) % 97
    return remainder == 1


def count_payment_cards(text: str) -> int:
    found = 0
    for m in _CARD.finditer(text):
        digits = re.sub(r"[ -]", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits) and len(set(digits)) > 1:
            found += 1
    return found


def count_ibans(text: str) -> int:
    return sum(1 for m in _IBAN.finditer(text) if iban_valid(m.group()))


DETECTORS: dict[str, Callable[[str], int]] = {
    "payment-card": count_payment_cards,
    "iban": count_ibans,
}
