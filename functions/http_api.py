"""HTTP routes: rotate on demand, and read-only status and plan views.

Every route needs a function key (auth level FUNCTION). Who the caller is,
and the optional app-role check (``ROTATION_REQUIRED_ROLE``), come from the
``x-ms-client-principal`` header, and that header is trusted only when App
Service Authentication is really on: the platform then validates the Entra
token, strips any ``x-ms-client-principal*`` header the client sent and
injects its own, and tells the app so with ``WEBSITE_AUTH_ENABLED``
(read once in ``shared/config/settings.py``, never from the request). Without it
anyone holding the function key could forge the header, so:

* a required role without App Service Authentication is a broken
  deployment: every route answers 503 ``DeploymentMisconfigured`` and does
  nothing (never a silent accept);
* without a required role the routes work with the function key alone, the
  principal headers are ignored and the recorded caller is "function-key";
* roles come from the ``roles`` claim only, never from a claim type the
  header itself names (``role_typ``).

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

from shared.bootstrap import Container, get_container
from shared.domain.errors import DeploymentMisconfigured, Forbidden, InvalidRequest, RotationError, VaultNotAllowed
from shared.domain.record import RotationRequest, Trigger
from shared.domain.validation import is_secret_name, is_vault_name, is_version, normal_vault, normal_version
from shared.service.views import plan, secret_status

log = logging.getLogger(__name__)

bp = func.Blueprint()

MAX_BODY_BYTES = 4 * 1024
MAX_REASON_CHARS = 256
MAX_CALLER_CHARS = 256
CONTROL_CHARS_RE = re.compile(r"[\x00-\x1f\x7f]")
DEFAULT_CALLER = "function-key"

PRINCIPAL_HEADER = "x-ms-client-principal"
PRINCIPAL_NAME_HEADER = "x-ms-client-principal-name"

# Claim types App Service Authentication uses for names and object ids. Fixed
# here: a type named inside the header (name_typ, role_typ) is never used.
NAME_CLAIMS = ("name", "preferred_username", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name")
OID_CLAIMS = ("oid", "http://schemas.microsoft.com/identity/claims/objectidentifier")
# App roles: the Entra "roles" claim, which App Service passes under that name
# (its default, legacy claim mapping; WEBSITE_AUTH_USE_LEGACY_CLAIMS must not
# be set to False, or the role check fails closed with 403).
ROLE_CLAIM = "roles"

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


UNTRUSTED = Principal(DEFAULT_CALLER, frozenset())


def principal_of(req: func.HttpRequest, *, platform_auth: bool) -> Principal:
    """Who is calling, from what App Service Authentication put in front of us.

    ``platform_auth`` is the deployment's ``WEBSITE_AUTH_ENABLED``; without
    it the headers could come from the client and nothing in them is used.
    Accepts the App Service shape (``claims`` with ``typ``/``val``) and the
    Static Web Apps shape (``userDetails``); a header that does not decode is
    treated as absent.
    """
    headers = req.headers
    if not platform_auth:
        if headers.get(PRINCIPAL_HEADER) or headers.get(PRINCIPAL_NAME_HEADER):
            # Never the header's content: it is attacker-controlled here.
            log.warning("ignored an x-ms-client-principal header: App Service Authentication is not enabled")
        return UNTRUSTED
    raw = headers.get(PRINCIPAL_HEADER)
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

        details = data.get("userDetails")
        caller = (details if isinstance(details, str) and details.strip() else None) or first(NAME_CLAIMS) or first(
            OID_CLAIMS
        )
        roles = {str(c["val"]) for c in claims if c.get("typ") == ROLE_CLAIM and isinstance(c.get("val"), str)}
    if not caller:
        caller = headers.get(PRINCIPAL_NAME_HEADER) or None
    cleaned = _clean(caller, MAX_CALLER_CHARS) if caller else ""
    return Principal(cleaned or DEFAULT_CALLER, frozenset(roles))


def authorize(req: func.HttpRequest, container: Container) -> Principal:
    settings = container.settings
    required = settings.required_role
    if required and not settings.platform_auth_enabled:
        log.error("ROTATION_REQUIRED_ROLE is set but App Service Authentication is not enabled; refusing the request")
        raise DeploymentMisconfigured(
            "the deployment requires an app role but App Service Authentication is not enabled, "
            "so callers cannot be identified; enable it (see docs/deploy.md) or unset ROTATION_REQUIRED_ROLE"
        )
    principal = principal_of(req, platform_auth=settings.platform_auth_enabled)
    if required and required not in principal.roles:
        raise Forbidden("the caller lacks the app role this API requires")
    return principal


# ------------------------------------------------------------------- requests


def _secret_name(req: func.HttpRequest) -> str:
    name = str(req.route_params.get("name") or "")
    if not is_secret_name(name):
        raise InvalidRequest("secret name must be 1-127 letters, digits or dashes")
    return name


def _vault(container: Container, requested: str | None) -> str:
    settings = container.settings
    vault = normal_vault(requested or "") or settings.default_vault
    if not vault:
        raise InvalidRequest("no vault given and no default vault configured")
    if not is_vault_name(vault):
        raise InvalidRequest("vault must be a Key Vault name")
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
        if not is_version(expected):
            raise InvalidRequest("expectedVersion must be a 32-character hexadecimal version id")
        body["expectedVersion"] = normal_version(expected)
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
