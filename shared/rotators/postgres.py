"""PostgreSQL login rotation.

The secret is a libpq connection string; only its user and password change,
so consumers keep every other setting (host, TLS mode, application name)
without the rotator having to understand them.

Two strategies:

``alternating`` (zero downtime)
    Two LOGIN roles take turns. Both are members of one NOLOGIN owner role
    and start every session with ``SET ROLE <owner>``, so whatever either of
    them creates belongs to the owner and both see and may change the same
    objects. A rotation gives the idle role a fresh password, consumers move
    to it, and ``retire`` removes the password of the role they left. The
    role in use is never touched, so no consumer is locked out at any step.

``single``
    One role whose password is replaced in ``apply``. Consumers that still
    hold the old value are refused from that moment until they re-read the
    vault. The engine records the new value durably in the vault before
    ``apply`` (``single_credential``), so a worker dying between ``apply`` and
    the vault write leaves a lockout of at most one lease period plus one
    redelivery, ended by committing the value already live (see
    docs/fault-matrix.md for the measured figure). Use it only where a second
    role is not an option.

Everything that decides what is touched comes from the secret's target in
the operator file (:class:`shared.config.operator_file.PostgresTarget`): host,
port, database, login and owner roles, strategy, the admin secret and the
probe SQL. The secret's own value is data that must agree with it: its
host, port, database and user must be the declared ones (and it may not
redirect libpq with ``hostaddr``, ``service`` or ``passfile``), or nothing is
changed. The admin credential is only ever sent to the declared host,
whatever host the admin secret names.

Passwords never reach the server in clear: libpq hashes them client-side to
a SCRAM-SHA-256 verifier, so ``log_statement=all`` or ``pg_stat_activity``
show only the verifier. Nothing here logs or raises with a password or a
connection string; messages name the step and the role.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from shared.config.operator_file import PostgresTarget
from shared.domain.errors import ConfigurationError, DownstreamError, SecretNotFound, VerificationFailed
from shared.domain.model import NewSecret, RetireResult, SecretVersion
from shared.rotators.base import RotationContext, RotatorDefaults
from shared.rotators.passwords import PASSWORD_ALPHABET, generate_password

__all__ = [
    "PASSWORD_ALPHABET",
    "ConnInfo",
    "PostgresRotator",
    "build_conninfo_uri",
    "generate_password",
]

logger = logging.getLogger(__name__)

ROLE_NAME_RE: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
URI_SCHEMES: Final = ("postgresql", "postgres")
DEFAULT_CONTENT_TYPE: Final = "application/x-postgresql-conninfo"


# --------------------------------------------------------------------------
# connection strings
# --------------------------------------------------------------------------


def _parse(raw: str) -> dict[str, str] | None:
    """libpq's own parse, or None when it fails.

    libpq's parse errors quote the offending fragment of the input, which may
    be the password. Callers raise outside the ``except`` block so the error
    is neither chained nor even kept as ``__context__``, where a log exporter
    walking the exception graph could still find it.
    """
    try:
        parsed = conninfo_to_dict(raw)
    except psycopg.Error:
        return None
    return {key: str(value) for key, value in parsed.items() if value is not None}


def _uri_scheme(raw: str) -> str | None:
    head, sep, _ = raw.strip().partition("://")
    if sep and head.lower() in URI_SCHEMES:
        return head.lower()
    return None


def _netloc_hosts(params: Mapping[str, str]) -> str | None:
    """The ``host:port,...`` part of a URI, or None when it cannot carry them.

    One port per host goes into the authority; a single port shared by
    several hosts does not fit there (libpq would bind it to the last host
    only), so it is left for the query string.
    """
    host = params.get("host")
    if not host:
        return None
    hosts = host.split(",")
    port = params.get("port")
    ports = port.split(",") if port else []
    if any(h == "" for h in hosts):
        return None
    if ports and len(ports) != len(hosts):
        return None
    parts: list[str] = []
    for index, item in enumerate(hosts):
        rendered = f"[{item}]" if ":" in item and not item.startswith("/") else quote(item, safe="")
        if ports:
            rendered += f":{quote(ports[index], safe='')}"
        parts.append(rendered)
    return ",".join(parts)


def build_conninfo_uri(params: Mapping[str, str], scheme: str = "postgresql") -> str:
    """Render libpq parameters as a URI that libpq parses back to the same dict.

    libpq has no URI writer and ``make_conninfo`` only emits ``key=value``;
    this builder percent-encodes every component with ``safe=""`` so any byte
    of a password (``@ : / ? % '`` and spaces included) survives. The result
    is checked by parsing it back; a mismatch raises ConfigurationError rather
    than hand a consumer a connection string that means something else.
    """
    remaining = dict(params)
    netloc = _netloc_hosts(remaining)
    if netloc is not None:
        remaining.pop("host", None)
        remaining.pop("port", None)
    else:
        netloc = ""
    user = remaining.pop("user", None)
    password = remaining.pop("password", None)
    userinfo = ""
    if user is not None or password is not None:
        userinfo = quote(user or "", safe="")
        if password is not None:
            userinfo += ":" + quote(password, safe="")
        userinfo += "@"
    dbname = remaining.pop("dbname", None)
    path = "/" + quote(dbname, safe="") if dbname is not None else ""
    query = "&".join(f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in remaining.items())
    uri = f"{scheme}://{userinfo}{netloc}{path}"
    if query:
        uri += "?" + query
    if _parse(uri) != dict(params):
        raise ConfigurationError("connection parameters do not survive a round trip through a URI")
    return uri


@dataclass(frozen=True)
class ConnInfo:
    """A parsed libpq connection string that remembers the form it was written in.

    The parameters include the password, so ``repr`` hides them.
    """

    params: Mapping[str, str] = field(repr=False)
    scheme: str | None  # URI scheme, or None for key=value

    @classmethod
    def parse(cls, raw: str, what: str) -> ConnInfo:
        params = _parse(raw)
        if params is None:
            raise ConfigurationError(f"{what} is not a valid libpq connection string")
        return cls(params=params, scheme=_uri_scheme(raw))

    @property
    def form(self) -> str:
        return "uri" if self.scheme is not None else "keyvalue"

    @property
    def user(self) -> str | None:
        return self.params.get("user")

    @property
    def password(self) -> str | None:
        return self.params.get("password")

    def render(self) -> str:
        """The connection string again, in the form it was read in."""
        if self.scheme is not None:
            return build_conninfo_uri(self.params, self.scheme)
        rendered: str | None
        try:
            rendered = make_conninfo("", **self.params)
        except psycopg.Error:
            rendered = None  # raised below, outside the handler: the error may quote a value
        if rendered is None:
            raise ConfigurationError("connection parameters cannot be written as key=value")
        return rendered

    def with_credentials(self, user: str, password: str) -> ConnInfo:
        params = dict(self.params)
        params["user"] = user
        params["password"] = password
        return ConnInfo(params=params, scheme=self.scheme)

    def without_credentials(self) -> ConnInfo:
        params = {k: v for k, v in self.params.items() if k not in ("user", "password", "passfile")}
        return ConnInfo(params=params, scheme=self.scheme)


# --------------------------------------------------------------------------
# the declared target
# --------------------------------------------------------------------------


def _role(name: str, option: str) -> str:
    if not ROLE_NAME_RE.fullmatch(name):
        # The name is not secret and helps the operator, but it may be long or
        # hostile; a truncated repr is enough to find the bad value.
        raise ConfigurationError(
            f"{option}: {name[:70]!r} is not a valid role name (want {ROLE_NAME_RE.pattern})"
        )
    return name


# libpq parameters that would send the connection somewhere other than the declared host.
REDIRECTING_PARAMS: Final = frozenset({"hostaddr", "service", "servicefile", "passfile"})


def _target(ctx: RotationContext) -> PostgresTarget:
    if not isinstance(ctx.target, PostgresTarget):
        raise ConfigurationError(f"secret {ctx.secret_name}: the operator file declares no PostgreSQL target for it")
    return ctx.target


def _check_declared(info: ConnInfo, target: PostgresTarget, what: str) -> None:
    """Refuse a connection string that points anywhere but the declared target."""
    params = info.params
    redirect = sorted(REDIRECTING_PARAMS & set(params))
    if redirect:
        raise ConfigurationError(f"{what} sets {', '.join(redirect)}; only the declared host may be used")
    if (params.get("host") or "").lower() != target.host.lower():
        raise ConfigurationError(f"{what} names a host other than target {target.name}'s")
    if (params.get("port") or "5432") != str(target.port):
        raise ConfigurationError(f"{what} names a port other than target {target.name}'s")
    if (params.get("dbname") or params.get("user") or "") != target.database:
        raise ConfigurationError(f"{what} names a database other than target {target.name}'s")


def _pinned(info: ConnInfo, target: PostgresTarget) -> ConnInfo:
    """The same parameters, pinned to the declared host, port and database."""
    params = {k: v for k, v in info.params.items() if k not in REDIRECTING_PARAMS}
    params.update({"host": target.host, "port": str(target.port), "dbname": target.database})
    return ConnInfo(params=params, scheme=info.scheme)


# --------------------------------------------------------------------------
# the rotator
# --------------------------------------------------------------------------


def _current(ctx: RotationContext, target: PostgresTarget) -> ConnInfo | None:
    if ctx.current is None or not ctx.current.value.strip():
        return None
    info = ConnInfo.parse(ctx.current.value, "the current secret value")
    _check_declared(info, target, "the current secret value")
    return info


def _describe(exc: BaseException) -> str:
    """Class and SQLSTATE of a driver error: enough to triage, never a value."""
    state = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__}" + (f" [{state}]" if state else "")


class PostgresRotator(RotatorDefaults):
    """Rotates a PostgreSQL login kept as a libpq connection string.

    ``password_factory`` exists so tests can inject hostile passwords; in
    production the default CSPRNG generator is used.
    """
    fences_writes = True  # ALTER ROLE is fenced after the admin connection


    def __init__(self, password_factory: Callable[[], str] | None = None) -> None:
        self._password_factory = password_factory or generate_password

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # -- helpers ------------------------------------------------------------

    async def _admin_conninfo(self, ctx: RotationContext, opts: PostgresTarget) -> ConnInfo:
        """The admin credential, pinned to the declared host whatever host the admin secret names."""
        try:
            admin = await ctx.secrets.get(opts.admin_secret)
        except SecretNotFound as exc:
            raise ConfigurationError(
                f"admin secret {opts.admin_secret!r} of target {opts.name} does not exist"
            ) from exc
        return _pinned(ConnInfo.parse(admin.value, f"admin secret {opts.admin_secret!r}"), opts)

    async def _connect_admin(
        self, ctx: RotationContext, opts: PostgresTarget, step: str
    ) -> psycopg.AsyncConnection[Any]:
        admin = await self._admin_conninfo(ctx, opts)
        try:
            return await psycopg.AsyncConnection.connect(
                admin.render(), autocommit=True, connect_timeout=opts.connect_timeout
            )
        except psycopg.Error as exc:
            raise DownstreamError(
                f"{step}: cannot connect to PostgreSQL with the admin secret ({_describe(exc)})"
            ) from exc

    def _chosen_role(self, opts: PostgresTarget, current: ConnInfo | None) -> str:
        current_user = current.user if current is not None else None
        if opts.strategy == "alternating":
            if current is None:
                return opts.roles[0]
            if current_user not in opts.roles:
                raise ConfigurationError(
                    f"strategy alternating: the current secret's user is neither of target {opts.name}'s roles"
                )
            return opts.roles[1] if current_user == opts.roles[0] else opts.roles[0]
        if current_user is not None and current_user != opts.roles[0]:
            raise ConfigurationError(f"strategy single: the current secret's user is not target {opts.name}'s role")
        return opts.roles[0]

    def _new_role(self, ctx: RotationContext, opts: PostgresTarget, new: NewSecret) -> tuple[str, str]:
        """Role and password of ``new``, cross-checked against the target.

        ``new`` is only ever trusted as far as the declared target and the
        current secret confirm it, so nothing is trusted that they do not
        confirm: above all, alternating must never re-password the role that
        consumers use right now.
        """
        parsed = ConnInfo.parse(new.value, "the new secret value")
        _check_declared(parsed, opts, "the new secret value")
        role, password = parsed.user, parsed.password
        if role is None or password is None:
            raise ConfigurationError("the new secret value has no user or no password")
        _role(role, "user of the new secret")
        if opts.strategy == "alternating":
            if role not in opts.roles:
                raise ConfigurationError("the new secret's user is not one of the target's roles")
            current = _current(ctx, opts)
            if current is not None and current.user == role:
                raise ConfigurationError("refusing to re-password the role the current secret uses")
        elif opts.roles and role != opts.roles[0]:
            raise ConfigurationError("the new secret's user is not the target's role")
        state_role = new.state.get("role")
        if state_role is not None and state_role != role:
            raise ConfigurationError("the new secret's user differs from the role chosen in create")
        return role, password

    @staticmethod
    async def _existing_roles(conn: psycopg.AsyncConnection[Any], names: Iterable[str]) -> set[str]:
        cur = await conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", [list(names)])
        return {row[0] for row in await cur.fetchall()}

    @staticmethod
    def _verifier(conn: psycopg.AsyncConnection[Any], role: str, password: str) -> str:
        # PQencryptPasswordConn with an explicit algorithm hashes locally and
        # never sends the password; only the verifier reaches the server.
        return conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode("ascii")

    async def _ensure_alternating_roles(self, conn: psycopg.AsyncConnection[Any], opts: PostgresTarget) -> None:
        assert opts.owner_role is not None
        wanted = (opts.owner_role, *opts.roles)
        existing = await self._existing_roles(conn, wanted)  # one query, not one per name
        missing = [name for name in wanted if name not in existing]
        if not missing:
            return
        if not opts.create_roles:
            raise ConfigurationError(
                f"roles missing in PostgreSQL: {', '.join(missing)}"
                " (set createRoles in the operator file to create them)"
            )
        owner = sql.Identifier(opts.owner_role)
        for name in missing:  # owner first: the login roles are granted it
            ident = sql.Identifier(name)
            # A concurrent creation is fine: the re-assertions in apply make it right.
            with contextlib.suppress(psycopg.errors.DuplicateObject):
                if name == opts.owner_role:
                    await conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(ident))
                else:
                    # Without a password: it gets one when its turn comes.
                    await conn.execute(sql.SQL("CREATE ROLE {} LOGIN INHERIT IN ROLE {}").format(ident, owner))
                    await conn.execute(
                        sql.SQL("ALTER ROLE {} SET role = {}").format(ident, sql.Literal(opts.owner_role))
                    )
            logger.info("postgres rotation: created role %s", name)

    # -- Rotator ------------------------------------------------------------

    async def create(self, ctx: RotationContext) -> NewSecret:
        opts = _target(ctx)
        current = _current(ctx, opts)
        role = self._chosen_role(opts, current)
        template = current if current is not None else (await self._admin_conninfo(ctx, opts)).without_credentials()
        password = self._password_factory()
        if not isinstance(password, str) or not password or "\x00" in password:
            raise ConfigurationError("password factory returned an unusable password")
        value = template.with_credentials(role, password).render()
        content_type = (ctx.current.properties.content_type if ctx.current else None) or DEFAULT_CONTENT_TYPE
        state: dict[str, Any] = {"strategy": opts.strategy, "role": role, "form": template.form}
        if opts.owner_role is not None and opts.strategy == "alternating":
            state["owner_role"] = opts.owner_role
        logger.info("postgres rotation %s: new credential for role %s (%s)", ctx.rotation_id, role, opts.strategy)
        return NewSecret(value=value, content_type=content_type, state=state)

    async def apply(self, ctx: RotationContext, new: NewSecret) -> None:
        opts = _target(ctx)
        role, password = self._new_role(ctx, opts, new)
        conn = await self._connect_admin(ctx, opts, f"apply for role {role}")
        try:
            if opts.strategy == "alternating":
                await self._ensure_alternating_roles(conn, opts)
            elif role not in await self._existing_roles(conn, [role]):
                raise ConfigurationError(f"role {role} does not exist in PostgreSQL")
            await ctx.fence()
            await self._set_password(conn, opts, role, password)
        except psycopg.Error as exc:
            raise DownstreamError(f"apply: changing the password of role {role} failed ({_describe(exc)})") from exc
        finally:
            await conn.close()
        logger.info("postgres rotation %s: password of role %s set", ctx.rotation_id, role)

    async def _set_password(
        self, conn: psycopg.AsyncConnection[Any], opts: PostgresTarget, role: str, password: str
    ) -> None:
        """The role's password (as a SCRAM verifier), and for ``alternating`` the invariants, in one transaction."""
        verifier = self._verifier(conn, role, password)
        async with conn.transaction():
            if opts.strategy == "alternating":
                await self._assert_alternating(conn, opts, role, verifier)
            else:
                await conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier))
                )

    @staticmethod
    async def _assert_alternating(
        conn: psycopg.AsyncConnection[Any], opts: PostgresTarget, role: str, verifier: str
    ) -> None:
        """Password plus the invariants the strategy relies on, in one transaction.

        Re-asserting membership and the session role on every rotation repairs
        drift (someone revoked a grant by hand) before consumers depend on it.
        """
        assert opts.owner_role is not None
        login, owner = sql.Identifier(role), sql.Identifier(opts.owner_role)
        if conn.info.server_version >= 160000:
            # Since 16 inheritance and SET ROLE are options of each grant; a
            # repeated GRANT updates them on the existing grant.
            await conn.execute(sql.SQL("GRANT {} TO {} WITH INHERIT TRUE, SET TRUE").format(owner, login))
        else:
            await conn.execute(sql.SQL("GRANT {} TO {}").format(owner, login))
        await conn.execute(sql.SQL("ALTER ROLE {} WITH LOGIN INHERIT PASSWORD {}").format(login, sql.Literal(verifier)))
        await conn.execute(sql.SQL("ALTER ROLE {} SET role = {}").format(login, sql.Literal(opts.owner_role)))

    async def verify(self, ctx: RotationContext, new: NewSecret) -> None:
        opts = _target(ctx)
        role, _ = self._new_role(ctx, opts, new)
        try:
            conn = await psycopg.AsyncConnection.connect(
                new.value, autocommit=True, connect_timeout=opts.connect_timeout
            )
        except psycopg.Error as exc:
            raise VerificationFailed(
                f"verify: cannot log in as role {role} with the new password ({_describe(exc)})"
            ) from exc
        try:
            try:
                # The probe is the operator file's, run as the new login role; prepared, so it
                # is one statement whatever its text says.
                await conn.execute(opts.probe, prepare=True)
                cur = await conn.execute("SELECT session_user::text, current_user::text")
                row = await cur.fetchone()
            except psycopg.Error as exc:
                raise VerificationFailed(f"verify: probe failed as role {role} ({_describe(exc)})") from exc
            session_user, current_user = row if row is not None else (None, None)
            if session_user != role:
                raise VerificationFailed(f"verify: logged in as {session_user}, expected role {role}")
            if opts.strategy == "alternating":
                if current_user != opts.owner_role:
                    raise VerificationFailed(
                        f"verify: role {role} runs as {current_user}, expected owner role {opts.owner_role}"
                        " (SET ROLE missing)"
                    )
                await self._check_same_memberships(conn, opts)
        finally:
            await conn.close()
        logger.info("postgres rotation %s: role %s verified", ctx.rotation_id, role)

    @staticmethod
    async def _check_same_memberships(conn: psycopg.AsyncConnection[Any], opts: PostgresTarget) -> None:
        """Both login roles must hold the same grants, or switching changes privileges."""
        try:
            cur = await conn.execute(
                "SELECT m.rolname::text, g.rolname::text FROM pg_auth_members a"
                " JOIN pg_roles m ON m.oid = a.member JOIN pg_roles g ON g.oid = a.roleid"
                " WHERE m.rolname = ANY(%s)",
                [list(opts.roles)],
            )
            rows = await cur.fetchall()
        except psycopg.Error as exc:
            raise VerificationFailed(f"verify: cannot read role memberships ({_describe(exc)})") from exc
        memberships: dict[str, set[str]] = {name: set() for name in opts.roles}
        for member, granted in rows:
            memberships[member].add(granted)
        first, second = (memberships[name] for name in opts.roles)
        if first != second:
            raise VerificationFailed(
                f"verify: roles {opts.roles[0]} and {opts.roles[1]} differ in memberships"
                f" ({', '.join(sorted(first ^ second))})"
            )
        if opts.owner_role not in first:
            raise VerificationFailed(f"verify: login roles are not members of owner role {opts.owner_role}")

    async def retire(self, ctx: RotationContext, previous: SecretVersion | None) -> RetireResult:
        opts = _target(ctx)
        if opts.strategy == "single":
            return RetireResult(done=True, detail="single strategy: the old password stopped working in apply")
        if previous is None or not previous.value.strip():
            return RetireResult(done=True, detail="no previous version")
        old_role = ConnInfo.parse(previous.value, "the previous secret value").user
        current = _current(ctx, opts)
        current_role = current.user if current is not None else None
        if old_role == current_role:
            return RetireResult(done=True, detail=f"previous version uses the current role {old_role}; left as is")
        if old_role not in opts.roles:
            logger.warning(
                "postgres retire %s: previous role is not one of the target's roles; left unchanged", ctx.rotation_id
            )
            return RetireResult(done=True, detail="previous role is not one of the target's roles; left unchanged")
        assert old_role is not None
        conn = await self._connect_admin(ctx, opts, f"retire for role {old_role}")
        try:
            await ctx.fence()
            await conn.execute(sql.SQL("ALTER ROLE {} PASSWORD NULL").format(sql.Identifier(old_role)))
        except psycopg.errors.UndefinedObject:
            return RetireResult(done=True, detail=f"role {old_role} no longer exists")
        except psycopg.Error as exc:
            raise DownstreamError(
                f"retire: removing the password of role {old_role} failed ({_describe(exc)})"
            ) from exc
        finally:
            await conn.close()
        logger.info("postgres retire %s: password of role %s removed", ctx.rotation_id, old_role)
        return RetireResult(done=True, detail=f"password of role {old_role} removed")

    # -- liveness (optional capabilities used by the engine) -------------------

    def single_credential(self, ctx: RotationContext) -> bool:
        """``single`` replaces the only password: the current value stops working in ``apply``."""
        return _target(ctx).strategy == "single"

    def _live_role(self, opts: PostgresTarget, parsed: ConnInfo) -> str:
        """The role a served value logs in as, checked against the declared target, never taken on trust."""
        _check_declared(parsed, opts, "the served secret value")
        role = parsed.user
        if role is None or parsed.password is None:
            raise ConfigurationError("the served secret value has no user or no password")
        _role(role, "user of the served secret")
        if role not in opts.roles:
            raise ConfigurationError(f"the served secret's user is not one of target {opts.name}'s roles")
        return role

    async def check(self, ctx: RotationContext, value: str) -> bool:
        """Log in with ``value`` (nothing written). A refusal is told apart from an outage by the admin login."""
        opts = _target(ctx)
        parsed = ConnInfo.parse(value, "the served secret value")
        role = self._live_role(opts, parsed)
        refused: str | None = None
        try:
            conn = await psycopg.AsyncConnection.connect(
                _pinned(parsed, opts).render(), autocommit=True, connect_timeout=opts.connect_timeout
            )
        except psycopg.Error as exc:
            refused = _describe(exc)
        else:
            try:
                cur = await conn.execute("SELECT session_user::text")
                row = await cur.fetchone()
            except psycopg.Error as exc:
                raise DownstreamError(f"check: probe failed as role {role} ({_describe(exc)})") from exc
            finally:
                await conn.close()
            return row is not None and row[0] == role
        # Refused, or PostgreSQL is down? Only a working admin login makes it a refusal.
        admin = await self._connect_admin(ctx, opts, f"check of role {role}")
        await admin.close()
        logger.info("postgres check %s: role %s refused the served value (%s)", ctx.rotation_id, role, refused)
        return False

    async def repair(self, ctx: RotationContext, value: str) -> str:
        """Give the role of the served value that value's password again (and, for alternating,
        its membership and session role). Other roles are not touched."""
        opts = _target(ctx)
        parsed = ConnInfo.parse(value, "the served secret value")
        role = self._live_role(opts, parsed)
        password = parsed.password
        assert password is not None
        admin_info = await self._admin_conninfo(ctx, opts)
        if admin_info.user == role:
            raise ConfigurationError(f"refusing to repair role {role}: it is the admin secret's own role")
        conn = await self._connect_admin(ctx, opts, f"repair of role {role}")
        try:
            cur = await conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [role])
            row = await cur.fetchone()
            if row is None:
                raise ConfigurationError(f"repair: role {role} does not exist in PostgreSQL")
            if row[0]:
                raise ConfigurationError(f"refusing to repair role {role}: it is a superuser")
            await ctx.fence()
            await self._set_password(conn, opts, role, password)
        except psycopg.Error as exc:
            raise DownstreamError(f"repair: setting the password of role {role} failed ({_describe(exc)})") from exc
        finally:
            await conn.close()
        logger.warning("postgres repair %s: password of role %s set back to the served value", ctx.rotation_id, role)
        return f"password of role {role} set back to the value the vault serves"
