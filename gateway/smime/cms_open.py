"""Reading EnvelopedData (RFC 5652 §6) and AuthEnvelopedData (RFC 5083), DER or BER.

Untrusted input is parsed by asn1crypto only (it reads the indefinite-length BER that
gpgsm and NSS write); every field we use is pulled out here into plain values, inside
one guard that turns any parser exception into SMIMEError("...", "malformed"), so the
code after it never meets a half-parsed object. Content decryption: AES-128/192/256-CBC
(RFC 3565), AES-GCM (RFC 5084, AuthEnvelopedData only, ICV 12..16 octets, authAttrs as
GCM additional data per RFC 5083 §2.2), and 3DES-CBC (RFC 3370 §5.1) for old senders.

parse_envelope here is the specification. The decrypt path calls
gateway.smime.cms_open_fast.parse_envelope, which reads the common DER shape without
building asn1crypto objects and hands everything else to this one.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import algos, cms, core
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from gateway.smime.errors import SMIMEError

ID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
ID_AUTH_ENVELOPED_DATA = "1.2.840.113549.1.9.16.1.23"

_CBC = {"2.16.840.1.101.3.4.1.2": ("aes128-cbc", 16), "2.16.840.1.101.3.4.1.22": ("aes192-cbc", 24),
        "2.16.840.1.101.3.4.1.42": ("aes256-cbc", 32), "1.2.840.113549.3.7": ("des-ede3-cbc", 24)}
_GCM = {"2.16.840.1.101.3.4.1.6": ("aes128-gcm", 16), "2.16.840.1.101.3.4.1.26": ("aes192-gcm", 24),
        "2.16.840.1.101.3.4.1.46": ("aes256-gcm", 32)}


class GCMParameters(core.Sequence):  # type: ignore[misc]
    """RFC 5084 §3.2."""

    _fields = [  # noqa: RUF012 -- asn1crypto's declaration style
        ("aes_nonce", core.OctetString),
        ("aes_icvlen", core.Integer, {"default": 12}),
    ]


@dataclass(frozen=True, slots=True)
class KeyTrans:
    """A KeyTransRecipientInfo: who (issuer+serial or SKI) and the wrapped key."""

    issuer: bytes | None  # Name DER as written
    serial: int | None
    ski: bytes | None
    algorithm: str  # dotted OID
    parameters: bytes | None  # the parameters' encoding, None when absent
    encrypted_key: bytes


@dataclass(frozen=True, slots=True)
class KeyAgree:
    """One RecipientEncryptedKey of a KeyAgreeRecipientInfo, with its shared fields."""

    issuer: bytes | None
    serial: int | None
    ski: bytes | None
    originator_point: bytes | None  # uncompressed/compressed EC point; None if not a key
    originator_curve: str | None  # named curve OID from the parameters, if given
    ukm: bytes | None
    scheme: str  # dotted key-agreement algorithm
    wrap: str | None  # dotted key-wrap algorithm from the scheme's parameters
    encrypted_key: bytes


@dataclass(frozen=True, slots=True)
class Envelope:
    kind: str  # "enveloped" | "auth-enveloped"
    recipients: tuple[KeyTrans | KeyAgree, ...]
    cipher: str  # our name, e.g. "aes128-gcm"
    key_length: int
    iv: bytes  # IV (CBC) or nonce (GCM)
    icv_length: int
    ciphertext: bytes
    mac: bytes
    aad: bytes  # GCM additional data: DER SET OF authAttrs, or b""


def _rid(rid: core.Choice) -> tuple[bytes | None, int | None, bytes | None]:
    if rid.name == "issuer_and_serial_number":
        return rid.chosen["issuer"].dump(), rid.chosen["serial_number"].native, None
    if rid.name == "subject_key_identifier":
        return None, None, bytes(rid.chosen.native)
    if rid.name == "r_key_id":  # RecipientKeyIdentifier of a kari
        return None, None, bytes(rid.chosen["subject_key_identifier"].native)
    return None, None, None


def _params(alg: core.Sequence) -> bytes | None:
    p = alg["parameters"]
    return None if isinstance(p, core.Void) or p.contents is None else p.dump()


def _key_agree(kari: cms.KeyAgreeRecipientInfo) -> list[KeyAgree]:
    originator = kari["originator"]
    point = curve = None
    if originator.name == "originator_key":
        key = originator.chosen
        point = bytes(key["public_key"].native)
        params = key["algorithm"]["parameters"]
        if not isinstance(params, core.Void) and params.name == "named":
            curve = params.chosen.dotted
    ukm = kari["ukm"].native
    kea = kari["key_encryption_algorithm"]
    wrap_der = _params(kea)
    wrap = None
    if wrap_der is not None:
        wrap = algos.AlgorithmIdentifier.load(wrap_der)["algorithm"].dotted
    out = []
    for rek in kari["recipient_encrypted_keys"]:
        issuer, serial, ski = _rid(rek["rid"])
        out.append(KeyAgree(issuer, serial, ski, point, curve,
                            None if ukm is None else bytes(ukm), kea["algorithm"].dotted,
                            wrap, bytes(rek["encrypted_key"].native)))
    return out


def _recipients(infos: cms.RecipientInfos) -> tuple[KeyTrans | KeyAgree, ...]:
    found: list[KeyTrans | KeyAgree] = []
    for info in infos:
        if info.name == "ktri":
            ktri = info.chosen
            issuer, serial, ski = _rid(ktri["rid"])
            alg = ktri["key_encryption_algorithm"]
            found.append(KeyTrans(issuer, serial, ski, alg["algorithm"].dotted, _params(alg),
                                  bytes(ktri["encrypted_key"].native)))
        elif info.name == "kari":
            found += _key_agree(info.chosen)
        # kekri / pwri / ori: not keys we hold; skipped, as RFC 5652 §6.2 allows
    return tuple(found)


def _content(kind: str, eci: cms.EncryptedContentInfo) -> tuple[str, int, bytes, int, bytes]:
    alg = eci["content_encryption_algorithm"]
    oid = alg["algorithm"].dotted
    content = eci["encrypted_content"].native
    if content is None:
        raise SMIMEError("detached encrypted content is not supported", "unsupported")
    params = _params(alg)
    if params is None:
        raise SMIMEError(f"content algorithm {oid} without parameters")
    if kind == "enveloped" and oid in _CBC:
        name, key_len = _CBC[oid]
        iv = core.OctetString.load(params).native
        if len(iv) != (8 if name == "des-ede3-cbc" else 16):
            raise SMIMEError(f"{name} IV of {len(iv)} octets")
        return name, key_len, bytes(iv), 0, bytes(content)
    if kind == "auth-enveloped" and oid in _GCM:
        name, key_len = _GCM[oid]
        gcm = GCMParameters.load(params)
        nonce, icv = bytes(gcm["aes_nonce"].native), gcm["aes_icvlen"].native
        if not nonce or not 12 <= icv <= 16:
            raise SMIMEError(f"GCM parameters with a {len(nonce)}-octet nonce and "
                             f"{icv}-octet ICV")
        return name, key_len, nonce, icv, bytes(content)
    raise SMIMEError(f"content encryption algorithm {oid} is not supported in {kind} data",
                     "unsupported")


def parse_envelope(data: bytes) -> Envelope:
    """The fields of an EnvelopedData or AuthEnvelopedData ContentInfo."""
    try:
        info = cms.ContentInfo.load(data, strict=True)
        content_type = info["content_type"].dotted
        if content_type == ID_ENVELOPED_DATA:
            kind, eci_name = "enveloped", "encrypted_content_info"
        elif content_type == ID_AUTH_ENVELOPED_DATA:
            kind, eci_name = "auth-enveloped", "auth_encrypted_content_info"
        else:
            raise SMIMEError(f"CMS content type {content_type} is not enveloped data",
                             "not-smime")
        env = info["content"]
        recipients = _recipients(env["recipient_infos"])
        cipher, key_len, iv, icv, ciphertext = _content(kind, env[eci_name])
        mac = aad = b""
        if kind == "auth-enveloped":
            mac = bytes(env["mac"].native)
            attrs = env["auth_attrs"]
            if not isinstance(attrs, core.Void):
                # RFC 5083 §2.2: the AAD is the DER of authAttrs under the SET OF tag.
                aad = b"\x31" + attrs.dump()[1:]
            if len(mac) != icv:
                raise SMIMEError(f"mac of {len(mac)} octets, GCM parameters say {icv}",
                                 "decrypt-failed")
    except SMIMEError:
        raise
    except Exception as e:  # asn1crypto raises ValueError, TypeError, KeyError, ...
        raise SMIMEError(f"malformed CMS envelope: {type(e).__name__}: {e}"[:300]) from None
    return Envelope(kind, recipients, cipher, key_len, iv, icv, ciphertext, mac, aad)


def decrypt_content(env: Envelope, key: bytes) -> bytes:
    """The plaintext, or SMIMEError "decrypt-failed" (bad tag, bad padding, bad length)."""
    if env.kind == "auth-enveloped":
        decryptor = Cipher(algorithms.AES(key),
                           modes.GCM(env.iv, env.mac, min_tag_length=env.icv_length)).decryptor()
        if env.aad:
            decryptor.authenticate_additional_data(env.aad)
        try:
            return decryptor.update(env.ciphertext) + decryptor.finalize()
        except InvalidTag:
            raise SMIMEError("GCM authentication tag does not match: wrong key or "
                             "tampered message", "decrypt-failed") from None
    block = 8 if env.cipher == "des-ede3-cbc" else 16
    if not env.ciphertext or len(env.ciphertext) % block:
        raise SMIMEError(f"{env.cipher} ciphertext of {len(env.ciphertext)} octets is not "
                         "whole blocks", "decrypt-failed")
    algorithm = TripleDES(key) if block == 8 else algorithms.AES(key)
    cbc = Cipher(algorithm, modes.CBC(env.iv)).decryptor()
    plain = cbc.update(env.ciphertext) + cbc.finalize()
    pad = plain[-1]
    if not 1 <= pad <= block or plain[-pad:] != bytes((pad,)) * pad:
        raise SMIMEError("bad CBC padding: wrong key or tampered message", "decrypt-failed")
    return plain[:-pad]
