"""The vault's state and Key Vault's rules, kept apart from HTTP.

Everything a test can observe through the SDK is decided here: which version
is "latest", what a disabled or deleted secret answers, what is a bad
parameter, how pages are cut. Keeping it free of sockets lets the in-process
inspection API (``KeyVaultEmulator.put``/``versions``/...) reuse exactly the
same rules as the REST surface, so seeding 10,000 secrets directly produces
the same state the SDK would have produced, only faster.

One re-entrant lock guards all state: requests arrive on many server threads
at once and tests inspect from yet another thread.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

NAME_RE = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
VERSION_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_VALUE_BYTES = 25 * 1024
MAX_TAGS = 15
MAX_TAG_NAME_CHARS = 512
MAX_TAG_VALUE_CHARS = 256
MAX_PAGE_SIZE = 25
RECOVERY_LEVEL = "Recoverable+Purgeable"
RECOVERABLE_DAYS = 90
_DAY = 86_400
_BACKUP_MAGIC = "kvemulator-backup-v1"


class VaultError(Exception):
    """An error Key Vault would answer, with its HTTP status and error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        inner_code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.inner_code = inner_code
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.inner_code is not None:
            error["innererror"] = {"code": self.inner_code}
        return {"error": error}


def bad_parameter(message: str) -> VaultError:
    return VaultError(400, "BadParameter", message)


def secret_not_found(name: str) -> VaultError:
    return VaultError(
        404,
        "SecretNotFound",
        f"A secret with (name/id) {name} was not found in this key vault. If you recently deleted this "
        "secret you may be able to recover it using the correct recovery command. For help resolving "
        "this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
    )


def version_not_found(name: str, version: str) -> VaultError:
    return VaultError(
        404,
        "SecretNotFound",
        f"A secret with (name/id) {name}/{version} was not found in this key vault. For help resolving "
        "this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
    )


def deleted_not_found(name: str) -> VaultError:
    return VaultError(404, "SecretNotFound", f"Deleted Secret not found: {name}")


def disabled(operation: str) -> VaultError:
    return VaultError(
        403,
        "Forbidden",
        f"Operation {operation} is not allowed on a disabled secret.",
        inner_code="SecretDisabled",
    )


def validate_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise bad_parameter(
            f"The request URI contains an invalid name: {name!r}. Secret names must be 1-127 characters "
            "of 0-9, a-z, A-Z and -."
        )


def _validate_value(value: Any) -> str:
    if not isinstance(value, str):
        raise bad_parameter("The parameter 'value' is required and must be a string.")
    if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
        raise bad_parameter(f"Secret value is too large: the maximum size is {MAX_VALUE_BYTES} bytes.")
    return value


def _validate_tags(tags: Any) -> dict[str, str] | None:
    if tags is None:
        return None
    if not isinstance(tags, Mapping):
        raise bad_parameter("The parameter 'tags' must be an object of string values.")
    if len(tags) > MAX_TAGS:
        raise bad_parameter(f"Too many tags: at most {MAX_TAGS} tags are allowed, {len(tags)} were given.")
    result: dict[str, str] = {}
    for key, val in tags.items():
        if not isinstance(key, str) or not isinstance(val, str):
            raise bad_parameter("Tag names and values must be strings.")
        if len(key) > MAX_TAG_NAME_CHARS:
            raise bad_parameter(f"Tag name is too long: the maximum is {MAX_TAG_NAME_CHARS} characters.")
        if len(val) > MAX_TAG_VALUE_CHARS:
            raise bad_parameter(f"Tag value is too long: the maximum is {MAX_TAG_VALUE_CHARS} characters.")
        result[key] = val
    return result


def _validate_content_type(content_type: Any) -> str | None:
    if content_type is None or isinstance(content_type, str):
        return content_type
    raise bad_parameter("The parameter 'contentType' must be a string.")


def _validate_time(attr: str, raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise bad_parameter(f"The attribute '{attr}' must be a number of seconds since the Unix epoch.")
    return int(raw)


def _validate_enabled(raw: Any) -> bool | None:
    if raw is None or isinstance(raw, bool):
        return raw
    raise bad_parameter("The attribute 'enabled' must be true or false.")


def _attributes_of(body: Mapping[str, Any]) -> Mapping[str, Any]:
    attributes = body.get("attributes")
    if attributes is None:
        return {}
    if not isinstance(attributes, Mapping):
        raise bad_parameter("The parameter 'attributes' must be an object.")
    return attributes


@dataclass(slots=True)
class _Version:
    version: str
    value: str
    content_type: str | None
    enabled: bool
    nbf: int | None
    exp: int | None
    created: int
    updated: int
    tags: dict[str, str] | None
    managed: bool
    seq: int


@dataclass(slots=True)
class _Secret:
    name: str
    versions: dict[str, _Version] = field(default_factory=dict)
    deleted_date: int | None = None
    scheduled_purge_date: int | None = None
    #: ``time.monotonic()`` before which the last delete/recover is not yet observable.
    settles_at: float = 0.0

    @property
    def latest(self) -> _Version:
        return next(reversed(self.versions.values()))

    def settled(self) -> bool:
        return self.settles_at <= time.monotonic()


class VaultStore:
    """All secrets of one vault, active and soft-deleted."""

    def __init__(
        self,
        base_url: str,
        *,
        clock: Callable[[], float] = time.time,
        propagation_delay: float = 0.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        self.propagation_delay = propagation_delay
        self._lock = threading.RLock()
        self._active: dict[str, _Secret] = {}
        self._deleted: dict[str, _Secret] = {}
        self._active_sorted: list[str] | None = None
        self._deleted_sorted: list[str] | None = None
        self._seq = itertools.count()

    # ----------------------------------------------------------------- shapes

    def _secret_id(self, secret: _Secret, version: _Version | None = None) -> str:
        if version is None:
            return f"{self.base_url}/secrets/{secret.name}"
        return f"{self.base_url}/secrets/{secret.name}/{version.version}"

    @staticmethod
    def _attributes(version: _Version) -> dict[str, Any]:
        attributes: dict[str, Any] = {"enabled": version.enabled}
        if version.nbf is not None:
            attributes["nbf"] = version.nbf
        if version.exp is not None:
            attributes["exp"] = version.exp
        attributes["created"] = version.created
        attributes["updated"] = version.updated
        attributes["recoveryLevel"] = RECOVERY_LEVEL
        attributes["recoverableDays"] = RECOVERABLE_DAYS
        return attributes

    def _shape(self, secret: _Secret, version: _Version, *, value: bool, versioned_id: bool = True) -> dict[str, Any]:
        bundle: dict[str, Any] = {}
        if value:
            bundle["value"] = version.value
        bundle["id"] = self._secret_id(secret, version if versioned_id else None)
        if version.content_type is not None:
            bundle["contentType"] = version.content_type
        bundle["attributes"] = self._attributes(version)
        if version.tags is not None:
            bundle["tags"] = dict(version.tags)
        if version.managed:
            bundle["managed"] = True
        return bundle

    def _deleted_shape(self, secret: _Secret, *, item: bool) -> dict[str, Any]:
        latest = secret.latest
        shaped: dict[str, Any] = {"recoveryId": f"{self.base_url}/deletedsecrets/{secret.name}"}
        shaped["deletedDate"] = secret.deleted_date
        shaped["scheduledPurgeDate"] = secret.scheduled_purge_date
        shaped.update(self._shape(secret, latest, value=False, versioned_id=not item))
        return shaped

    # ------------------------------------------------------------- internals

    def _now(self) -> int:
        return int(self.clock())

    def _active_secret(self, name: str) -> _Secret:
        secret = self._active.get(name.lower())
        if secret is None or not secret.settled():
            raise secret_not_found(name)
        return secret

    def _version_of(self, secret: _Secret, name: str, version: str | None) -> _Version:
        if not version:
            return secret.latest
        found = secret.versions.get(version) if VERSION_RE.fullmatch(version) else None
        if found is None:
            raise version_not_found(name, version)
        return found

    def _create_version(
        self,
        name: str,
        value: Any,
        *,
        content_type: Any,
        enabled: Any,
        nbf: Any,
        exp: Any,
        tags: Any,
        created: int | None = None,
        managed: bool = False,
    ) -> tuple[_Secret, _Version]:
        validate_name(name)
        checked_value = _validate_value(value)
        checked_tags = _validate_tags(tags)
        checked_type = _validate_content_type(content_type)
        checked_enabled = _validate_enabled(enabled)
        checked_nbf = _validate_time("nbf", nbf)
        checked_exp = _validate_time("exp", exp)
        key = name.lower()
        now = self._now() if created is None else created
        with self._lock:
            if key in self._deleted:
                raise VaultError(
                    409,
                    "Conflict",
                    f"Secret {name} is currently in a deleted but recoverable state, and its name cannot be "
                    "reused; in this state, the secret can only be recovered or purged.",
                )
            secret = self._active.get(key)
            if secret is None:
                secret = _Secret(name=name)
                self._active[key] = secret
                self._active_sorted = None
            version = _Version(
                version=uuid.uuid4().hex,
                value=checked_value,
                content_type=checked_type,
                enabled=True if checked_enabled is None else checked_enabled,
                nbf=checked_nbf,
                exp=checked_exp,
                created=now,
                updated=now,
                tags=checked_tags,
                managed=managed,
                seq=next(self._seq),
            )
            secret.versions[version.version] = version
            return secret, version

    def _sorted(self, source: dict[str, _Secret], deleted: bool) -> list[str]:
        cached = self._deleted_sorted if deleted else self._active_sorted
        if cached is None:
            cached = sorted(source)
            if deleted:
                self._deleted_sorted = cached
            else:
                self._active_sorted = cached
        return cached

    # ---------------------------------------------------------------- paging

    @staticmethod
    def _encode_token(kind: str, marker: str | int) -> str:
        raw = json.dumps({"k": kind, "m": marker}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def _decode_token(kind: str, token: str | None) -> Any:
        if token is None:
            return None
        try:
            padded = token + "=" * (-len(token) % 4)
            decoded = json.loads(base64.urlsafe_b64decode(padded.encode()))
        except (ValueError, binascii.Error) as exc:
            raise bad_parameter("The $skiptoken is not valid.") from exc
        if not isinstance(decoded, dict) or decoded.get("k") != kind or "m" not in decoded:
            raise bad_parameter("The $skiptoken is not valid for this collection.")
        return decoded["m"]

    def _next_link(self, path: str, kind: str, marker: str | int, api_version: str, maxresults: int | None) -> str:
        link = f"{self.base_url}{path}?api-version={api_version}&$skiptoken={self._encode_token(kind, marker)}"
        if maxresults is not None:
            link += f"&maxresults={maxresults}"
        return link

    def _page_of_names(
        self,
        *,
        source: dict[str, _Secret],
        deleted: bool,
        maxresults: int | None,
        skiptoken: str | None,
        path: str,
        api_version: str,
    ) -> dict[str, Any]:
        kind = "deleted" if deleted else "secrets"
        marker = self._decode_token(kind, skiptoken)
        if marker is not None and not isinstance(marker, str):
            raise bad_parameter("The $skiptoken is not valid.")
        size = maxresults or MAX_PAGE_SIZE
        items: list[dict[str, Any]] = []
        with self._lock:
            names = self._sorted(source, deleted)
            index = 0 if marker is None else bisect.bisect_right(names, marker)
            last: str | None = None
            while index < len(names) and len(items) < size:
                key = names[index]
                index += 1
                secret = source[key]
                last = key
                if not secret.settled():
                    continue
                if deleted:
                    items.append(self._deleted_shape(secret, item=True))
                else:
                    items.append(self._shape(secret, secret.latest, value=False, versioned_id=False))
            more = index < len(names)
        next_link = self._next_link(path, kind, last, api_version, maxresults) if more and last else None
        return {"value": items, "nextLink": next_link}

    # ------------------------------------------------------------ REST verbs

    def set_secret(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        attributes = _attributes_of(body)
        secret, version = self._create_version(
            name,
            body.get("value"),
            content_type=body.get("contentType"),
            enabled=attributes.get("enabled"),
            nbf=attributes.get("nbf"),
            exp=attributes.get("exp"),
            tags=body.get("tags"),
        )
        return self._shape(secret, version, value=True)

    def get_secret(self, name: str, version: str | None) -> dict[str, Any]:
        with self._lock:
            secret = self._active_secret(name)
            found = self._version_of(secret, name, version)
            if not found.enabled:
                raise disabled("get")
            return self._shape(secret, found, value=True)

    def update_secret(self, name: str, version: str | None, body: Mapping[str, Any]) -> dict[str, Any]:
        attributes = _attributes_of(body)
        tags = _validate_tags(body.get("tags"))
        content_type = _validate_content_type(body.get("contentType"))
        enabled = _validate_enabled(attributes.get("enabled"))
        nbf = _validate_time("nbf", attributes.get("nbf"))
        exp = _validate_time("exp", attributes.get("exp"))
        with self._lock:
            secret = self._active_secret(name)
            found = self._version_of(secret, name, version)
            if "tags" in body and body["tags"] is not None:
                found.tags = tags
            if content_type is not None:
                found.content_type = content_type
            if enabled is not None:
                found.enabled = enabled
            if nbf is not None:
                found.nbf = nbf
            if exp is not None:
                found.exp = exp
            found.updated = self._now()
            return self._shape(secret, found, value=False)

    def delete_secret(self, name: str) -> dict[str, Any]:
        with self._lock:
            secret = self._active_secret(name)
            key = name.lower()
            del self._active[key]
            now = self._now()
            secret.deleted_date = now
            secret.scheduled_purge_date = now + RECOVERABLE_DAYS * _DAY
            secret.settles_at = time.monotonic() + self.propagation_delay
            self._deleted[key] = secret
            self._active_sorted = None
            self._deleted_sorted = None
            return self._deleted_shape(secret, item=False)

    def get_deleted(self, name: str) -> dict[str, Any]:
        with self._lock:
            secret = self._deleted.get(name.lower())
            if secret is None or not secret.settled():
                raise deleted_not_found(name)
            return self._deleted_shape(secret, item=False)

    def recover(self, name: str) -> dict[str, Any]:
        with self._lock:
            key = name.lower()
            secret = self._deleted.get(key)
            if secret is None or not secret.settled():
                raise deleted_not_found(name)
            del self._deleted[key]
            secret.deleted_date = None
            secret.scheduled_purge_date = None
            secret.settles_at = time.monotonic() + self.propagation_delay
            self._active[key] = secret
            self._active_sorted = None
            self._deleted_sorted = None
            return self._shape(secret, secret.latest, value=False)

    def purge(self, name: str) -> None:
        with self._lock:
            key = name.lower()
            secret = self._deleted.get(key)
            if secret is None or not secret.settled():
                raise deleted_not_found(name)
            del self._deleted[key]
            self._deleted_sorted = None

    def list_secrets(self, maxresults: int | None, skiptoken: str | None, api_version: str) -> dict[str, Any]:
        return self._page_of_names(
            source=self._active,
            deleted=False,
            maxresults=maxresults,
            skiptoken=skiptoken,
            path="/secrets",
            api_version=api_version,
        )

    def list_deleted(self, maxresults: int | None, skiptoken: str | None, api_version: str) -> dict[str, Any]:
        return self._page_of_names(
            source=self._deleted,
            deleted=True,
            maxresults=maxresults,
            skiptoken=skiptoken,
            path="/deletedsecrets",
            api_version=api_version,
        )

    def list_versions(
        self, name: str, maxresults: int | None, skiptoken: str | None, api_version: str
    ) -> dict[str, Any]:
        marker = self._decode_token("versions", skiptoken)
        if marker is not None and (isinstance(marker, bool) or not isinstance(marker, int)):
            raise bad_parameter("The $skiptoken is not valid.")
        size = maxresults or MAX_PAGE_SIZE
        with self._lock:
            secret = self._active.get(name.lower())
            if secret is None or not secret.settled():
                return {"value": [], "nextLink": None}
            ordered = list(secret.versions.values())
            start = 0 if marker is None else bisect.bisect_right([v.seq for v in ordered], marker)
            page = ordered[start : start + size]
            items = [self._shape(secret, v, value=False) for v in page]
            more = start + size < len(ordered)
            path = f"/secrets/{secret.name}/versions"
        next_link = self._next_link(path, "versions", page[-1].seq, api_version, maxresults) if more else None
        return {"value": items, "nextLink": next_link}

    def backup(self, name: str) -> dict[str, Any]:
        with self._lock:
            secret = self._active_secret(name)
            payload = {
                "magic": _BACKUP_MAGIC,
                "name": secret.name,
                "versions": [
                    {
                        "version": v.version,
                        "value": v.value,
                        "contentType": v.content_type,
                        "enabled": v.enabled,
                        "nbf": v.nbf,
                        "exp": v.exp,
                        "created": v.created,
                        "updated": v.updated,
                        "tags": v.tags,
                        "managed": v.managed,
                    }
                    for v in secret.versions.values()
                ],
            }
        blob = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
        return {"value": blob}

    def restore(self, body: Mapping[str, Any]) -> dict[str, Any]:
        blob = body.get("value")
        if not isinstance(blob, str):
            raise bad_parameter("The parameter 'value' is required.")
        try:
            payload = json.loads(base64.urlsafe_b64decode((blob + "=" * (-len(blob) % 4)).encode()))
            if payload.get("magic") != _BACKUP_MAGIC:
                raise ValueError("not a backup")
            name = str(payload["name"])
            raw_versions = list(payload["versions"])
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            raise bad_parameter("The backup blob is invalid.") from exc
        key = name.lower()
        with self._lock:
            if key in self._active or key in self._deleted:
                raise VaultError(409, "Conflict", f"Secret {name} already exists.")
            secret = _Secret(name=name)
            for raw in raw_versions:
                version = _Version(
                    version=str(raw["version"]),
                    value=str(raw["value"]),
                    content_type=raw.get("contentType"),
                    enabled=bool(raw.get("enabled", True)),
                    nbf=raw.get("nbf"),
                    exp=raw.get("exp"),
                    created=int(raw["created"]),
                    updated=int(raw["updated"]),
                    tags=raw.get("tags"),
                    managed=bool(raw.get("managed", False)),
                    seq=next(self._seq),
                )
                secret.versions[version.version] = version
            if not secret.versions:
                raise bad_parameter("The backup blob is invalid.")
            self._active[key] = secret
            self._active_sorted = None
            return self._shape(secret, secret.latest, value=False)

    # ------------------------------------------------------- direct access

    def put(
        self,
        name: str,
        value: str,
        *,
        content_type: str | None = None,
        enabled: bool = True,
        nbf: int | None = None,
        exp: int | None = None,
        tags: Mapping[str, str] | None = None,
        created: int | None = None,
        managed: bool = False,
    ) -> dict[str, Any]:
        secret, version = self._create_version(
            name,
            value,
            content_type=content_type,
            enabled=enabled,
            nbf=nbf,
            exp=exp,
            tags=dict(tags) if tags is not None else None,
            created=created,
            managed=managed,
        )
        return self._inspect(secret, version)

    def _inspect(self, secret: _Secret, version: _Version) -> dict[str, Any]:
        shaped = self._shape(secret, version, value=True)
        shaped["name"] = secret.name
        shaped["version"] = version.version
        return shaped

    def versions(self, name: str, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            secret = self._active.get(name.lower())
            if secret is None and include_deleted:
                secret = self._deleted.get(name.lower())
            if secret is None:
                return []
            return [self._inspect(secret, v) for v in secret.versions.values()]

    def latest(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            secret = self._active.get(name.lower())
            return None if secret is None else self._inspect(secret, secret.latest)

    def names(self, *, deleted: bool = False) -> list[str]:
        with self._lock:
            source = self._deleted if deleted else self._active
            return [source[key].name for key in self._sorted(source, deleted)]

    def modify(
        self,
        name: str,
        version: str | None,
        changes: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Apply already-validated attribute changes (keys: enabled, nbf, exp, tags, content_type)."""
        with self._lock:
            secret = self._active.get(name.lower())
            if secret is None:
                raise secret_not_found(name)
            found = self._version_of(secret, name, version)
            if "tags" in changes:
                found.tags = _validate_tags(changes["tags"])
            if "content_type" in changes:
                found.content_type = _validate_content_type(changes["content_type"])
            if "enabled" in changes:
                found.enabled = bool(changes["enabled"])
            if "nbf" in changes:
                found.nbf = _validate_time("nbf", changes["nbf"])
            if "exp" in changes:
                found.exp = _validate_time("exp", changes["exp"])
            found.updated = self._now()
            return self._inspect(secret, found)

    def remove(self, name: str, *, purge: bool = False) -> None:
        with self._lock:
            key = name.lower()
            if key in self._active:
                self.delete_secret(name)
                self._deleted[key].settles_at = 0.0
            if purge:
                self.purge(name)

    def clear(self) -> None:
        with self._lock:
            self._active.clear()
            self._deleted.clear()
            self._active_sorted = None
            self._deleted_sorted = None
