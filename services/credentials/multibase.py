"""Multibase and multicodec helpers: base58btc ('z'), base64url ('u') and unsigned varints.

Only the encodings the credentials domain needs; written out because they are a
few lines each and it keeps the dependency list short.
"""

from __future__ import annotations

import base64
import binascii

from .errors import EncodingError

BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58_INDEX = {c: i for i, c in enumerate(BASE58_ALPHABET)}

BASE58BTC_PREFIX = "z"
BASE64URL_PREFIX = "u"


def base58btc_encode(data: bytes) -> str:
    """Bitcoin-alphabet base58; each leading zero byte becomes a leading '1'."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, rem = divmod(number, 58)
        digits.append(BASE58_ALPHABET[rem])
    return "1" * zeros + "".join(reversed(digits))


def base58btc_decode(text: str) -> bytes:
    if not isinstance(text, str):
        raise EncodingError(f"base58btc value must be a string, got {type(text).__name__}")
    number = 0
    for char in text:
        try:
            number = number * 58 + _BASE58_INDEX[char]
        except KeyError:
            raise EncodingError(f"invalid base58btc character {char!r}") from None
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * zeros + body


def multibase_base58btc_encode(data: bytes) -> str:
    return BASE58BTC_PREFIX + base58btc_encode(data)


def multibase_base58btc_decode(text: str) -> bytes:
    if not isinstance(text, str) or not text.startswith(BASE58BTC_PREFIX):
        raise EncodingError("expected a multibase base58btc value starting with 'z'")
    return base58btc_decode(text[1:])


def multibase_base64url_encode(data: bytes) -> str:
    """Multibase base64url without padding (prefix 'u'), as Bitstring Status List requires."""
    return BASE64URL_PREFIX + base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def multibase_base64url_decode(text: str) -> bytes:
    if not isinstance(text, str) or not text.startswith(BASE64URL_PREFIX):
        raise EncodingError("expected a multibase base64url value starting with 'u'")
    body = text[1:]
    if "=" in body:
        raise EncodingError("multibase base64url must not be padded")
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EncodingError(f"invalid base64url: {exc}") from None


def varint_encode(value: int) -> bytes:
    """Unsigned LEB128, the varint multicodec uses (0xed -> ed 01, 0x1300 -> 80 26)."""
    if value < 0:
        raise EncodingError("varint must be non-negative")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def varint_decode(data: bytes) -> tuple[int, int]:
    """Return (value, bytes consumed); rejects truncated and non-minimal encodings."""
    value = 0
    for i, byte in enumerate(data[:9]):
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i and byte == 0:
                raise EncodingError("non-minimal varint")
            return value, i + 1
    raise EncodingError("truncated or overlong varint")


def multicodec_wrap(code: int, payload: bytes) -> bytes:
    return varint_encode(code) + payload


def multicodec_unwrap(data: bytes) -> tuple[int, bytes]:
    code, used = varint_decode(data)
    return code, data[used:]
