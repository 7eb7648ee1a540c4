"""[inbound] harvest end to end: `smimegate run` for beta.test with harvest on.

alice@alpha.test's message, signed and encrypted by OpenSSL, verifies (smime=pass); the
worker returns alice's chain, the front end offers it to its resolver, and /metrics
shows it stored; the same signer again finds the address filled and is skipped.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator

import pytest

from benchmarks.loadgen import Sink
from gateway.keys.demo import write_demo_pki
from tests.test_inbound_e2e import World, openssl_mail, send, toml
from tests.test_outbound_e2e import Gateway

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module", name="world")
def world_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    pki = tmp_path_factory.mktemp("harvest-e2e-pki")
    write_demo_pki(pki)
    tmp = tmp_path_factory.mktemp("harvest-gw")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    sink = Sink(port=0, keep_data=True)
    asyncio.run_coroutine_threadsafe(sink.start(), loop).result(10)
    config = toml(pki, tmp, sink.port).replace("[inbound]\n", "[inbound]\nharvest = true\n")
    # A cache name of our own: another test run on this machine may hold the usual one.
    config = config.replace('name = "smimegate-test-inbound-',
                            f'name = "smimegate-test-harvest-{uuid.uuid4().hex[:8]}-')
    assert "harvest = true" in config
    gateway = Gateway(tmp, config)
    args = gateway.args
    args[args.index("gw.alpha.test")] = "mx.beta.test"
    args[args.index("alpha.test")] = "beta.test"  # the --local-domain value
    try:
        gateway.start()
        yield World(pki, tmp, gateway, sink, loop)
    finally:
        gateway.stop()
        asyncio.run_coroutine_threadsafe(sink.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_verified_signer_is_harvested_once(world: World) -> None:
    stored = 'smimegate_lookup_harvested_total{result="stored"}'
    skipped = 'smimegate_lookup_harvested_total{result="skipped"}'
    send(world, openssl_mail(world.pki, world.tmp, "beta.test/bob.pem", "One"),
         "one@alpha.test")
    assert b"smime=pass" in world.arrived("one@alpha.test")
    assert world.gateway.metric(stored) == 1
    send(world, openssl_mail(world.pki, world.tmp, "beta.test/bob.pem", "Two"),
         "two@alpha.test")
    assert b"smime=pass" in world.arrived("two@alpha.test")
    assert world.gateway.metric(stored) == 1
    assert world.gateway.metric(skipped) == 1
