"""Passwords for downstream systems (PostgreSQL roles, Redis ACL users).

One generator for every rotator, so strength and alphabet are decided once.
The alphabet deliberately includes characters that need quoting in URIs and
connection strings (``@ : / %``), so every rotation exercises the escaping
instead of hiding a bug until a password happens to contain one.
"""

from __future__ import annotations

import secrets
import string
from typing import Final

PASSWORD_ALPHABET: Final = string.ascii_letters + string.digits + "-_.~!*@:/%"
PASSWORD_LENGTH: Final = 40
MIN_PASSWORD_LENGTH: Final = 32


def generate_password(length: int = PASSWORD_LENGTH) -> str:
    """Random password from a CSPRNG; 40 chars of a 72-symbol alphabet is ~246 bits."""
    if length < MIN_PASSWORD_LENGTH:
        raise ValueError(f"passwords shorter than {MIN_PASSWORD_LENGTH} characters are not allowed")
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length))
