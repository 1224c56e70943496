"""HTTP routes: rotate on demand, and read-only status and plan views.

Every route needs a function key (auth level FUNCTION). The caller recorded
on a rotation, and the optional app-role check (``ROTATION_REQUIRED_ROLE``),
come from the ``x-ms-client-principal`` header that App Service
Authentication (Easy Auth) injects after validating an Entra token. Only
Easy Auth strips that header from incoming requests, so the role check is a
real control only when Easy Auth is enabled in front of the app; without it
anyone holding the function key could forge the header. The caller is then
just an audit hint, and falls back to "function-key".

Errors are answered in one shape, ``{"error": {"code", "message"}}``, mapped
from the project's exception tree in :func:`error_response`; messages come
from our own exceptions, which never carry secret material, and anything
unexpected becomes a generic 500 whose details go only to the log.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import azure.functions as func

from shared.container import Container, get_container
from shared.engine import RotationRequest, Trigger
from shared.errors import Forbidden, InvalidRequest, RotationError, VaultNotAllowed
from shared.inventory import plan, secret_status

log = logging.getLogger(__name__)

bp = func.Blueprint()

SECRET_NAME_RE = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
VERSION_RE = re.compile(r"^[0-9a-fA-F]{32}$")
MAX_BODY_BYTES = 4 * 1024
MAX_REASON_CHARS = 256
MAX_CALLER_CHARS = 256
CONTROL_CHARS_RE = re.compile(r"[\x00-\x1f\x7f]")
DEFAULT_CALLER = "function-key"

# Claim types App Service Authentication uses for names, object ids and roles.
NAME_CLAIMS = ("name", "preferred_username", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name")
OID_CLAIMS = ("oid", "http://schemas.microsoft.com/identity/claims/objectidentifier")
ROLE_CLAIMS = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")

_ROTATE_FIELDS: Mapping[str, type] = {
    "vault": str,
    "force": bool,
    "emergency": bool,
    "dryRun": bool,
    "reason": str,
    "expectedVersion": str,
}


# ------------------------------------------------------------------ responses


def json_response(status: int, body: Any) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body),
        status_code=status,
        mimetype="application/json",
        headers={"Cache-Control": "no-store"},
    )


def error_response(exc: BaseException) -> func.HttpResponse:
    """The one mapping from the exception tree to an HTTP answer."""
    if isinstance(exc, RotationError):
        return json_response(exc.http_status, {"error": {"code": exc.code, "message": exc.message}})
    log.error("unexpected error in an HTTP route", exc_info=exc)
    return json_response(500, {"error": {"code": "InternalError", "message": "an unexpected error occurred"}})


# ------------------------------------------------------------------- identity


@dataclass(frozen=True)
class Principal:
    caller: str
    roles: frozenset[str]


def _clean(text: str, limit: int) -> str:
    return CONTROL_CHARS_RE.sub("", text).strip()[:limit]


def _decode_principal(raw: str) -> Mapping[str, Any] | None:
    try:
        padded = raw.strip() + "=" * (-len(raw.strip()) % 4)
        data = json.loads(base64.b64decode(padded, validate=False))
    except (binascii.Error, ValueError):
        return None
    return data if isinstance(data, Mapping) else None


def principal_of(req: func.HttpRequest) -> Principal:
    """Who is calling, from what App Service Authentication put in front of us.

    Accepts the App Service shape (``claims`` with ``typ``/``val``,
    ``name_typ``, ``role_typ``) and the Static Web Apps shape
    (``userDetails``, ``userId``); a header that does not decode is treated
    as absent.
    """
    headers = req.headers
    raw = headers.get("x-ms-client-principal")
    data = _decode_principal(raw) if raw else None
    caller: str | None = None
    roles: set[str] = set()
    if data is not None:
        listed = data.get("claims")
        claims = [c for c in listed if isinstance(c, Mapping)] if isinstance(listed, list) else []

        def first(types: tuple[str, ...]) -> str | None:
            for wanted in types:
                for claim in claims:
                    if claim.get("typ") == wanted and isinstance(claim.get("val"), str) and claim["val"].strip():
                        return str(claim["val"])
            return None

        name_typ = data.get("name_typ")
        role_typ = data.get("role_typ")
        details = data.get("userDetails")
        caller = (
            (details if isinstance(details, str) and details.strip() else None)
            or first(((name_typ,) if isinstance(name_typ, str) else ()) + NAME_CLAIMS)
            or first(OID_CLAIMS)
        )
        role_types = set(ROLE_CLAIMS) | ({role_typ} if isinstance(role_typ, str) else set())
        roles = {str(c["val"]) for c in claims if c.get("typ") in role_types and isinstance(c.get("val"), str)}
    if not caller:
        caller = headers.get("x-ms-client-principal-name") or None
    cleaned = _clean(caller, MAX_CALLER_CHARS) if caller else ""
    return Principal(cleaned or DEFAULT_CALLER, frozenset(roles))


def authorize(req: func.HttpRequest, container: Container) -> Principal:
    principal = principal_of(req)
    required = container.settings.required_role
    if required and required not in principal.roles:
        raise Forbidden("the caller lacks the app role this API requires")
    return principal


# ------------------------------------------------------------------- requests


def _secret_name(req: func.HttpRequest) -> str:
    name = str(req.route_params.get("name") or "")
    if not SECRET_NAME_RE.fullmatch(name):
        raise InvalidRequest("secret name must be 1-127 letters, digits or dashes")
    return name


def _vault(container: Container, requested: str | None) -> str:
    settings = container.settings
    vault = (requested or "").strip().lower() or settings.default_vault
    if not vault:
        raise InvalidRequest("no vault given and no default vault configured")
    if vault not in settings.allowed_vaults:
        raise VaultNotAllowed("vault is not on the allow-list")
    return vault


def parse_rotate_body(raw: bytes) -> dict[str, Any]:
    """Strictly validated options of a rotate request; anything unexpected is a 400."""
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidRequest(f"body must not exceed {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest("body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    unknown = sorted(set(body) - set(_ROTATE_FIELDS))
    if unknown:
        raise InvalidRequest(f"unknown fields: {', '.join(unknown)}")
    for key, wanted in _ROTATE_FIELDS.items():
        if key in body and type(body[key]) is not wanted:
            raise InvalidRequest(f"field {key} must be a {'boolean' if wanted is bool else 'string'}")
    reason = body.get("reason")
    if reason is not None:
        if len(reason) > MAX_REASON_CHARS:
            raise InvalidRequest(f"reason must not exceed {MAX_REASON_CHARS} characters")
        if CONTROL_CHARS_RE.search(reason):
            raise InvalidRequest("reason must not contain control characters")
    expected = body.get("expectedVersion")
    if expected is not None:
        if not VERSION_RE.fullmatch(expected):
            raise InvalidRequest("expectedVersion must be a 32-character hexadecimal version id")
        body["expectedVersion"] = expected.lower()
    return body


# ------------------------------------------------------------------- handlers


async def handle_rotate(req: func.HttpRequest, container: Container) -> func.HttpResponse:
    """POST secrets/{name}/rotate: rotate now, resume, or plan (dryRun)."""
    try:
        principal = authorize(req, container)
        name = _secret_name(req)
        body = parse_rotate_body(req.get_body() or b"")
        vault = _vault(container, body.get("vault"))
        emergency = bool(body.get("emergency", False))
        if emergency and body.get("dryRun"):
            raise InvalidRequest("emergency and dryRun exclude each other")
        request = RotationRequest(
            vault=vault,
            secret_name=name,
            trigger=Trigger.EMERGENCY if emergency else Trigger.HTTP,
            expected_version=body.get("expectedVersion"),
            force=bool(body.get("force", False)),
            dry_run=bool(body.get("dryRun", False)),
            reason=(body.get("reason") or "").strip() or None,
            caller=principal.caller,
        )
        outcome = await container.engine.run(request)
    except Exception as exc:
        return error_response(exc)
    log.log(
        logging.WARNING if request.trigger == Trigger.EMERGENCY else logging.INFO,
        "http rotate%s: %s",
        " (EMERGENCY: previous credential revoked at once)" if request.trigger == Trigger.EMERGENCY else "",
        outcome.status,
        extra={"vault": outcome.vault, "secret": outcome.secret_name, "rotation_id": outcome.rotation_id,
               "caller": principal.caller, "dry_run": request.dry_run, "force": request.force},
    )
    return json_response(200, outcome.to_dict())


async def handle_status(req: func.HttpRequest, container: Container) -> func.HttpResponse:
    """GET secrets/{name}/rotation: read-only, never takes a lease or writes."""
    try:
        authorize(req, container)
        name = _secret_name(req)
        vault = _vault(container, req.params.get("vault"))
        status = await secret_status(container, vault, name)
    except Exception as exc:
        return error_response(exc)
    return json_response(200, status)


async def handle_plan(req: func.HttpRequest, container: Container) -> func.HttpResponse:
    """GET secrets: the managed inventory of one or every allowed vault."""
    try:
        authorize(req, container)
        requested = req.params.get("vault")
        vaults = [_vault(container, requested)] if requested else list(container.settings.allowed_vaults)
        secrets = await plan(container, vaults)
    except Exception as exc:
        return error_response(exc)
    return json_response(200, {"secrets": secrets, "vaults": vaults})


# ---------------------------------------------------------- function bindings


@bp.function_name("rotate_secret")
@bp.route(route="secrets/{name}/rotate", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def rotate_secret(req: func.HttpRequest) -> func.HttpResponse:
    return await handle_rotate(req, get_container())


@bp.function_name("rotation_status")
@bp.route(route="secrets/{name}/rotation", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def rotation_status(req: func.HttpRequest) -> func.HttpResponse:
    return await handle_status(req, get_container())


@bp.function_name("rotation_plan")
@bp.route(route="secrets", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def rotation_plan(req: func.HttpRequest) -> func.HttpResponse:
    return await handle_plan(req, get_container())
