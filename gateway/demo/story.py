"""The two-gateway demo as a story in acts (issue 7, item 4): both domains publish their
certificates; alice@alpha.test writes to bob@beta.test; what crossed the "Internet"
(RFC 8551 signed and RFC 5083 encrypted); what bob's server received (decrypted, with
RFC 7281 Authentication-Results once the inbound path exists); alpha's signing
certificate revoked in the directory, and the next message judged again; a metrics
summary scraped from both gateways' /metrics.
"""

from __future__ import annotations

import email.utils
import json
import re
import smtplib
import time
from pathlib import Path

from gateway.demo.mailboxes import Received
from gateway.demo.procs import DemoError, fetch
from gateway.demo.world import World

WAIT = 20.0  # seconds a message may take through both gateways before the demo says so


def message(subject: str, body: str) -> tuple[str, bytes]:
    mid = email.utils.make_msgid(domain="alpha.test")
    data = (f"Message-ID: {mid}\r\nFrom: Alice <alice@alpha.test>\r\n"
            f"To: Bob <bob@beta.test>\r\nSubject: {subject}\r\n"
            f"Date: {email.utils.formatdate()}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body)
    return mid, data.encode()


def show(title: str, data: bytes, lines: int = 10) -> None:
    print(f"    {title} ({len(data)} bytes):")
    for line in data.split(b"\r\n")[:lines]:
        print("      | " + line.decode("utf-8", "replace")[:96])
    print("      | ...")


def send(world: World, subject: str, body: str) -> str:
    mid, data = message(subject, body)
    port = world.ports["alpha"][0]
    # Not `with SMTP(...)`: its __exit__ sends QUIT, and an exception there (a reply out
    # of step after Ctrl-C interrupted a read) would replace the KeyboardInterrupt.
    try:
        s = smtplib.SMTP("127.0.0.1", port, timeout=60)
    except OSError as e:
        raise DemoError(f"gateway alpha unreachable: {e}") from None
    try:
        s.sendmail("alice@alpha.test", ["bob@beta.test"], data)
        s.quit()
    except (smtplib.SMTPException, OSError) as e:
        raise DemoError(f"gateway alpha refused alice's message: {e}") from None
    finally:
        s.close()
    return mid


def crossed(world: World, mid: str) -> Received:
    assert world.internet is not None
    got = world.internet.wait_for(mid.encode(), WAIT)
    if got is None:
        raise DemoError(f"{mid} never left gateway alpha:\n" + world.children[1].tail())
    return got


def act_publish(world: World, files: list[Path]) -> None:
    print(f"[1] demo PKI: {len(files)} files in {world.pki} (root CA, intermediate, OCSP "
          "responder; domain RSA + EC certificates and a user per domain)")
    world.create_tokens()
    world.start_directory()
    print(f"[2] directory on {world.directory_url} (SQLite in "
          f"{world.out / 'directory-data'}, OCSP for the demo intermediate); a write "
          "token each for alpha.test and beta.test, which publish:")
    for domain in ("alpha.test", "beta.test"):
        for line in world.publish(domain):
            print(f"    {domain} published {line}")


def act_start(world: World) -> None:
    world.start_mail_servers()
    world.start_gateways()
    a, b = world.ports["alpha"], world.ports["beta"]
    assert world.internet is not None
    print(f"[3] gateway alpha on 127.0.0.1:{a[0]} (admin {a[1]}) -> the Internet "
          f"(recording relay 127.0.0.1:{world.internet.port}) -> gateway beta on "
          f"127.0.0.1:{b[0]} (admin {b[1]}) -> bob's server 127.0.0.1:{world.beta_sink.port}")


def inbound_at_work(got: Received) -> bool:
    """Whether gateway beta judged the message (decrypted it or said what it verified)."""
    return (b"pkcs7-mime" not in got.head.lower()
            or any("smime=" in r for r in got.header("Authentication-Results")))


def act_first_message(world: World) -> tuple[bool, bool]:
    """(passed, inbound path at work)."""
    mid = send(world, "Quarterly figures", "Hi Bob,\r\n\r\nthe figures are attached. "
               "Grüße, Alice\r\n")
    print(f"\n[4] alice@alpha.test -> bob@beta.test through gateway alpha: {mid}")
    wire = crossed(world, mid)
    (world.out / "on-the-wire.eml").write_bytes(wire.data)
    sealed = b"pkcs7-mime" in wire.head.lower()
    print(f"[5] what crossed the Internet: {'signed and encrypted' if sealed else 'NOT encrypted'}"
          f"; gateway beta answered {wire.reply!r}")
    show("on the wire (saved as on-the-wire.eml)", wire.data[wire.data.find(b"Message-ID"):], 14)
    got = world.beta_sink.wait_for(mid.encode(), WAIT)
    if got is None:
        raise DemoError(f"{mid} never reached bob's server:\n" + world.children[-1].tail())
    (world.out / "bob-received-1.eml").write_bytes(got.data)
    if not inbound_at_work(got):
        print("[6] what bob's server received: the message as it crossed, still encrypted "
              "(the inbound path, decrypt + verify at gateway beta, is not built yet)")
        return sealed, False
    results = got.header("Authentication-Results")
    print("[6] what bob's server received (decrypted and verified by gateway beta; saved as "
          "bob-received-1.eml):")
    for r in results:
        print(f"    Authentication-Results: {r}")
    show("bob's server", got.data[got.data.find(b"Message-ID"):], 18)
    return sealed and any("smime=pass" in r for r in results), True


def quarantined(world: World) -> list[Path]:
    folder = world.out / "gateway-beta" / "quarantine"
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def quarantine_reason(path: Path) -> str:
    """The verdict and reason a quarantine entry records (its first line is JSON)."""
    try:
        with path.open("rb") as f:
            meta = json.loads(f.readline())
    except (OSError, ValueError):
        return "(entry unreadable)"
    if not isinstance(meta, dict):
        return "(entry unreadable)"
    return f"smime={meta.get('verdict', '?')}: {meta.get('reason', '?')}"


def act_revoked(world: World, inbound: bool) -> bool:
    fp = world.revoke("alpha.test", "domain-rsa")
    print(f"\n[7] alpha.test revoked its signing certificate in the directory "
          f"({fp[:16]}..., keyCompromise); the directory's OCSP now answers 'revoked'")
    if not inbound:
        print("[8] the next message would fail verification at gateway beta: not shown, "
              "the inbound path (decrypt + verify) is not built yet")
        return True
    before = quarantined(world)
    mid = send(world, "Quarterly figures, again", "Hi Bob,\r\n\r\nsigned with a key "
               "that is no longer trusted.\r\n")
    print(f"[8] alice writes again: {mid}")
    wire = crossed(world, mid)
    print(f"    gateway beta answered the Internet {wire.reply!r}")
    if not wire.reply.startswith("250"):
        print("    refused before the 250 ([inbound] on_fail): gateway alpha holds or bounces it")
        return True
    got = world.beta_sink.wait_for(mid.encode(), 3.0)
    if got is not None:
        (world.out / "bob-received-2.eml").write_bytes(got.data)
        results = got.header("Authentication-Results")
        for r in results:
            print(f"    Authentication-Results: {r}")
        print("    delivered to bob with the verdict above ([inbound] on_fail = deliver)")
        return not any("smime=pass" in r for r in results)
    held = [p for p in quarantined(world) if p not in before]
    print("    bob's server got nothing: gateway beta quarantined it ([inbound] on_fail = "
          f"quarantine), {len(held)} new file(s) in {world.out / 'gateway-beta/quarantine'}")
    for p in held[:1]:
        print(f"      {p.name}: {quarantine_reason(p)}")
    return bool(held)


METRICS = re.compile(r"^smimegate_(smtp_messages_accepted|smtp_refused|outbound|inbound|"
                     r"deliveries|dsn|revocation|lookup)\w*_total(\{[^}]*\})? ")


def act_metrics(world: World) -> None:
    print("\n[9] metrics (counters above zero, from each gateway's /metrics):")
    for name in ("alpha", "beta"):
        try:
            text = fetch(f"http://127.0.0.1:{world.ports[name][1]}/metrics")
        except OSError as e:
            print(f"    {name}: /metrics unreachable ({e})")
            continue
        for line in text.splitlines():
            if METRICS.match(line) and float(line.rsplit(" ", 1)[1]) > 0:
                value = float(line.rsplit(" ", 1)[1])
                print(f"    {name:<5} {line.rsplit(' ', 1)[0]} {value:g}")


def run_story(out: Path) -> int:
    world = World(out)
    started = time.monotonic()
    try:
        act_publish(world, world.write_pki())
        act_start(world)
        ok, inbound = act_first_message(world)
        ok = act_revoked(world, inbound) and ok
        act_metrics(world)
    except DemoError as e:
        print(f"\ndemo FAILED: {e}")
        return 1
    except KeyboardInterrupt:
        print("\ndemo interrupted: stopping everything it started")
        return 130
    finally:
        world.close()
    print(f"\n{'All acts passed' if ok else 'demo FAILED'} in {time.monotonic() - started:.1f} s; "
          f"every process stopped; configs, logs and messages are in {out}/")
    return 0 if ok else 1
