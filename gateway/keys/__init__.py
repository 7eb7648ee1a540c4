"""This gateway's own keys and certificates, and the trust anchors everything must chain to."""

from gateway.keys.errors import KeyMaterialError
from gateway.keys.identity import Identity, KeyRing
from gateway.keys.load import (
    load_certificates,
    load_identity,
    load_pkcs12,
    load_private_key,
    load_trust_anchors,
)

__all__ = [
    "Identity",
    "KeyMaterialError",
    "KeyRing",
    "load_certificates",
    "load_identity",
    "load_pkcs12",
    "load_private_key",
    "load_trust_anchors",
]
