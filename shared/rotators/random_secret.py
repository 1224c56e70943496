"""Random secrets (session keys, opaque tokens) with no downstream system.

Nothing outside the vault holds the value, so apply has nothing to do and
verify checks the value is what the policy asked for. Options:
``length`` (bytes for encoded keys, characters for text; default 32),
``encoding`` (``base64url`` default, ``base64``, ``hex``, ``text``, or
``whsec``: a Standard Webhooks signing key ``whsec_<base64>`` of 24 to 64
bytes, the form the refresh pings' ``hmacSecret`` must have) and, for
``text``, ``alphabet`` (``alnum`` default, ``alnum-symbols``, ``hex``).

Whatever the options say, a value with less than 128 bits of entropy is
refused before anything is generated: options of a tag-managed secret come
from tags, and a tag must not be able to weaken a key (16 hex characters are
only 64 bits).
"""

from __future__ import annotations

import base64
import math
import secrets
import string

from shared.domain.errors import ConfigurationError, VerificationFailed
from shared.domain.model import NewSecret, RetireResult, SecretVersion
from shared.rotators.base import RotationContext, RotatorDefaults

ALPHABETS = {
    "alnum": string.ascii_letters + string.digits,
    "alnum-symbols": string.ascii_letters + string.digits + "-_.~!*@#%^+=",
    "hex": "0123456789abcdef",
}
ENCODINGS = ("base64url", "base64", "hex", "text", "whsec")
WHSEC_PREFIX = "whsec_"
WHSEC_BYTES = (24, 64)  # the Standard Webhooks specification's key sizes
MIN_LENGTH = 16
MAX_LENGTH = 4096
MIN_ENTROPY_BITS = 128


def _length(raw: str | None) -> int:
    try:
        length = int(raw) if raw else 32
    except ValueError as exc:
        raise ConfigurationError("option length must be a whole number") from exc
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise ConfigurationError(f"option length must be between {MIN_LENGTH} and {MAX_LENGTH}")
    return length


def entropy_bits(options: dict[str, str]) -> float:
    """Bits of entropy of a value these options generate; raises for options that make no sense."""
    length = _length(options.get("length"))
    encoding = options.get("encoding", "base64url")
    if encoding not in ENCODINGS:
        raise ConfigurationError(f"option encoding must be one of {ENCODINGS}")
    if encoding == "whsec" and not WHSEC_BYTES[0] <= length <= WHSEC_BYTES[1]:
        raise ConfigurationError(f"option length must be {WHSEC_BYTES[0]} to {WHSEC_BYTES[1]} for encoding whsec")
    if encoding != "text":
        return length * 8.0
    alphabet = ALPHABETS.get(options.get("alphabet", "alnum"))
    if alphabet is None:
        raise ConfigurationError(f"option alphabet must be one of {sorted(ALPHABETS)}")
    return length * math.log2(len(alphabet))


def generate(options: dict[str, str] | None = None) -> str:
    opts = options or {}
    bits = entropy_bits(opts)
    if bits < MIN_ENTROPY_BITS:
        raise ConfigurationError(
            f"options give {bits:.0f} bits of entropy; at least {MIN_ENTROPY_BITS} are required"
        )
    length = _length(opts.get("length"))
    encoding = opts.get("encoding", "base64url")
    if encoding == "text":
        alphabet = ALPHABETS[opts.get("alphabet", "alnum")]
        return "".join(secrets.choice(alphabet) for _ in range(length))
    raw = secrets.token_bytes(length)
    if encoding == "base64url":
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    if encoding == "base64":
        return base64.b64encode(raw).decode()
    if encoding == "hex":
        return raw.hex()
    if encoding == "whsec":
        return WHSEC_PREFIX + base64.b64encode(raw).decode()
    raise ConfigurationError(f"option encoding must be one of {ENCODINGS}")


def decoded_length(value: str, encoding: str) -> int:
    if encoding == "base64url":
        return len(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    if encoding == "base64":
        return len(base64.b64decode(value, validate=True))
    if encoding == "hex":
        return len(bytes.fromhex(value))
    if encoding == "whsec":
        if not value.startswith(WHSEC_PREFIX):
            raise ValueError("not a whsec_ key")
        return len(base64.b64decode(value[len(WHSEC_PREFIX) :], validate=True))
    return len(value)


class RandomRotator(RotatorDefaults):
    fences_writes = True  # nothing is written downstream

    async def create(self, ctx: RotationContext) -> NewSecret:
        value = generate(dict(ctx.options))
        encoding = ctx.options.get("encoding", "base64url")
        return NewSecret(value=value, content_type="text/plain", state={"encoding": encoding})

    async def apply(self, ctx: RotationContext, new: NewSecret) -> None:
        return None

    async def verify(self, ctx: RotationContext, new: NewSecret) -> None:
        encoding = ctx.options.get("encoding", "base64url")
        try:
            size = decoded_length(new.value, encoding)
        except ValueError as exc:
            raise VerificationFailed("generated value does not decode with the policy's encoding") from exc
        if size != _length(ctx.options.get("length")):
            raise VerificationFailed("generated value has the wrong length")
        if ctx.current is not None and new.value == ctx.current.value:
            raise VerificationFailed("generated value equals the current one")

    async def retire(self, ctx: RotationContext, previous: SecretVersion | None) -> RetireResult:
        return RetireResult(done=True, detail="nothing downstream to retire")
