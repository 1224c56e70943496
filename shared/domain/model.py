"""Plain data passed between the engine, the ports and the rotators.

Kept free of SDK types so rotators and the engine can be unit-tested against
fakes of our own ports, and so no SDK object (which may hold a value) leaks
into logs through a ``repr``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class SecretProperties:
    """What Key Vault knows about one version, without its value."""

    name: str
    version: str
    enabled: bool = True
    created_on: datetime | None = None
    updated_on: datetime | None = None
    not_before: datetime | None = None
    expires_on: datetime | None = None
    content_type: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SecretVersion:
    """One version with its value. ``repr`` never shows the value."""

    properties: SecretProperties
    value: str = field(repr=False)

    @property
    def name(self) -> str:
        return self.properties.name

    @property
    def version(self) -> str:
        return self.properties.version


@dataclass(frozen=True)
class NewSecret:
    """A value a rotator created and has not yet committed.

    ``state`` carries what the rotator needs between its own steps (for
    example which PostgreSQL role was chosen). It must never hold the value and
    is safe to log.
    """

    value: str = field(repr=False)
    content_type: str
    state: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RetireResult:
    """Outcome of a retire step: ``done`` False means try again later.

    ``disable_previous`` asks the engine to disable the previous vault version
    (its value must no longer be served, e.g. an old JWT key).
    ``replacement`` asks the engine to write the current credential again
    without the retired parts (a JWKS without the old key); the engine tags it
    with the same rotation id, so it is not a second rotation.
    """

    done: bool
    detail: str = ""
    disable_previous: bool = False
    replacement: NewSecret | None = None
