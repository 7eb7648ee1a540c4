"""[inbound] harvest end to end: `smimegate run` for beta.test with harvest on.

alice@alpha.test's message, signed and encrypted by OpenSSL, verifies (smime=pass); the
worker returns alice's chain, the front end offers it to its resolver, and /metrics
shows it stored; the same signer again finds the address filled and is skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.test_inbound_e2e import World, beta_world, openssl_mail, send, toml

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module", name="world")
def world_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    pki = tmp_path_factory.mktemp("harvest-e2e-pki")
    tmp = tmp_path_factory.mktemp("harvest-gw")

    def config_for(sink_port: int) -> str:
        config = toml(pki, tmp, sink_port).replace("[inbound]\n", "[inbound]\nharvest = true\n")
        # A cache name of our own: another test run on this machine may hold the usual one.
        config = config.replace('name = "smimegate-test-inbound-',
                                f'name = "smimegate-test-harvest-{uuid.uuid4().hex[:8]}-')
        assert "harvest = true" in config
        return config

    yield from beta_world(pki, tmp, config_for)


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
