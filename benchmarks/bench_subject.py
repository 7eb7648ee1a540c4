"""Subject keyword stripping micro-benchmark: per core, next to the alternatives.

`python -m benchmarks.bench_subject [--full] [--json PATH]`

On a 10 KB message, gateway.outbound.subject.strip_keywords with the keyword written
literally, Q-encoded, B-encoded across a run of two words, and in a three-line folded
UTF-8 subject, measured in alternating rounds next to (a) the literal-only strip it
replaced (a regex over the Subject, kept here as the baseline), (b) the stdlib way of
doing the same: parse with `email` (compat32), decode with email.header, remove, encode
with email.header.Header and serialise, and (c) one RSA-2048 signature, the per-message
cost that bounds the gateway (DESIGN.md). Prints figures and ratios; writes JSON to
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import re
import statistics
import sys
import time
from collections.abc import Callable
from email.header import Header, decode_header, make_header
from functools import partial

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from benchmarks._rates import per_cpu_second
from benchmarks._results import write_results
from gateway.outbound.subject import strip_keywords

KEYWORD = "[encrypt]"
SUBJECTS = {
    "literal": b" [encrypt] Salaries 2027",
    "Q one word": b" =?UTF-8?Q?=5Bencrypt=5D_Geh=C3=A4lter_2027?=",
    "B split run": b" =?UTF-8?B?W2VuY3J5?= =?UTF-8?B?cHRdIEdlaMOkbHRlciAyMDI3?=",
    "Q 3 lines": (b" =?UTF-8?Q?Gehaltsabrechnung_f=C3=BCr_das_Jahr_2027_und_die_Boni?=\r\n"
                  b" =?UTF-8?Q?_der_Abteilung_=5Bencrypt=5D_Vertrieb_S=C3=BCd_und_Nord?=\r\n"
                  b" =?UTF-8?Q?_bitte_vertraulich_behandeln?="),
}
_SUBJECT = re.compile(rb"^Subject:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*", re.IGNORECASE | re.MULTILINE)


def make_message(subject: bytes, size: int = 10240) -> bytes:
    body = (b"Dear Bob, the figures follow. caf\xc3\xa9 " * 12 + b"\r\n") * (size // 440)
    return (b"From: Alice <alice@alpha.test>\r\nTo: Bob <bob@beta.test>\r\nSubject:"
            + subject + b"\r\nDate: Sat, 28 Nov 2026 17:00:00 +0000\r\n"
            b"Message-ID: <1@alpha.test>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
            b"\r\n" + body)


def literal_only(message: bytes, keywords: tuple[str, ...]) -> tuple[bytes, bool]:
    """The strip this module replaced: literal occurrences only (baseline)."""
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[:end + 2]
    m = _SUBJECT.search(head)
    if m is None:
        return message, False
    name, _, value = m.group(0).partition(b":")
    found = True
    for keyword in keywords:
        value, n = re.compile(re.escape(keyword.encode()), re.IGNORECASE).subn(b"", value)
        found = found and n > 0
    value = re.sub(rb"\r\n[ \t]*(?=\r\n|$)", b"", value)
    value = re.sub(rb"[ \t]{2,}", b" ", value).rstrip(b" \t")
    return message[:m.start()] + name + b":" + value + message[m.end():], found


def stdlib(message: bytes, keywords: tuple[str, ...]) -> tuple[bytes, bool]:
    """The same with the `email` package: parse, decode, remove, encode, serialise."""
    msg = email.message_from_bytes(message)
    text = str(make_header(decode_header(msg["Subject"])))
    found = True
    for keyword in keywords:
        text, n = re.compile(re.escape(keyword), re.IGNORECASE).subn("", text)
        found = found and n > 0
    encoded = Header(" ".join(text.split()), "utf-8", header_name="Subject").encode()
    msg.replace_header("Subject", encoded)
    return msg.as_bytes(policy=email.policy.compat32.clone(linesep="\r\n")), found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="5 rounds of 1 s (default 3 × 0.2 s)")
    parser.add_argument("--json", help="result file (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    rounds, seconds = (5, 1.0) if args.full else (3, 0.2)

    key = rsa.generate_private_key(65537, 2048)
    cases: dict[str, Callable[[], object]] = {
        "RSA-2048 sign (the per-message bound)": partial(
            key.sign, b"x" * 32, padding.PKCS1v15(), hashes.SHA256()),
    }
    for name, subject in SUBJECTS.items():
        msg = make_message(subject)
        assert strip_keywords(msg, (KEYWORD,))[1], name
        cases[f"strip {name}"] = partial(strip_keywords, msg, (KEYWORD,))
        cases[f"stdlib {name}"] = partial(stdlib, msg, (KEYWORD,))
    literal = make_message(SUBJECTS["literal"])
    cases["literal-only strip (before) literal"] = partial(literal_only, literal, (KEYWORD,))
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):  # alternate, so drift hits every case alike
        for name, fn in cases.items():
            samples[name].append(per_cpu_second(fn, seconds))
    med = {name: statistics.median(v) for name, v in samples.items()}
    print("10 KB message, calls per CPU-second (one core):")
    for name, value in med.items():
        print(f"  {name:40s} {value:12,.0f}")
    sign = med["RSA-2048 sign (the per-message bound)"]
    ratios: dict[str, float] = {
        "strip literal / literal-only strip": med["strip literal"]
        / med["literal-only strip (before) literal"],
    }
    for name in SUBJECTS:
        ratios[f"strip {name} / stdlib"] = med[f"strip {name}"] / med[f"stdlib {name}"]
        ratios[f"strip {name} / RSA sign"] = med[f"strip {name}"] / sign
    for name, value in ratios.items():
        print(f"  ratio {name:40s} {value:8.2f}")
    write_results("subject", {
        "mode": "full" if args.full else "quick", "per_cpu_second": med, "ratios": ratios,
        "rounds": rounds, "seconds_per_round": seconds,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, args.json,
        facts={"python": sys.version.split()[0]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
