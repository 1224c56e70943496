"""Redis ACL password rotation (Redis 6+), ``default`` user included.

Redis lets one ACL user hold several passwords at once, which gives a
zero-downtime rotation without a second user: ``apply`` makes the user's
password set exactly {current, new} on every node, consumers move to the new
value, and ``retire`` removes the previous one. Setting the whole set (rather
than adding one) also drops a password left by a crashed earlier attempt and
the previous-but-one, so a redelivery always converges.

ACL changes are not replicated, so every node (primary and replicas) is
changed and checked on its own, and each node is asked to persist the change
so a restart does not resurrect an old password.

The secret is either a bare password or a ``redis://``/``rediss://`` URL
whose password changes while the rest of it is kept. What is touched comes
from the secret's target in the operator file
(:class:`shared.config.operator_file.RedisTarget`): the nodes, the ACL user, the
admin secret, persistence and TLS. The secret's value must agree with it (a
URL's user must be the declared user and its host one of the declared
nodes), or nothing is changed; the admin credential is only ever sent to the
declared nodes, whatever host the admin secret's URL names.

Passwords are sent to the admin connection only as SHA-256 hashes
(``#<hash>`` adds, ``!<hash>`` removes), which is what Redis stores anyway:
no plaintext in ``MONITOR`` output, and no quoting concern for passwords with
spaces or ``>``. Nothing here logs or raises with a password or a URL.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError, ResponseError

from shared.config.operator_file import RedisTarget
from shared.domain.errors import ConfigurationError, DownstreamError, SecretNotFound, VerificationFailed
from shared.domain.model import NewSecret, RetireResult, SecretVersion
from shared.rotators.base import RotationContext, RotatorDefaults
from shared.rotators.passwords import PASSWORD_ALPHABET, generate_password

__all__ = ["PASSWORD_ALPHABET", "RedisCredential", "RedisRotator", "generate_password", "password_hash"]

logger = logging.getLogger(__name__)

URL_SCHEMES: Final = ("redis", "rediss")
PERSIST_MODES: Final = ("auto", "aclsave", "rewrite", "none")
DEFAULT_PORT: Final = 6379
DEFAULT_USER: Final = "default"
DEFAULT_CONNECT_TIMEOUT: Final = 5.0
DEFAULT_CONTENT_TYPE: Final = "text/plain"
USER_RE: Final = re.compile(r"^[^\s\x00-\x1f\x7f]{1,256}$")


def password_hash(password: str) -> str:
    """The form Redis stores a password in (``ACL GETUSER`` shows these)."""
    return hashlib.sha256(password.encode()).hexdigest()


def _no_retry() -> Retry:
    # redis-py 8 retries ConnectionError, and AuthenticationError is one, with
    # back-off for seconds by default. A refused password must fail at once,
    # and a dead node must not stall the rotation. It must be the asyncio
    # Retry: the sync class silently misbehaves with redis.asyncio.
    return Retry(NoBackoff(), 0)


# --------------------------------------------------------------------------
# secrets and addresses
# --------------------------------------------------------------------------


def _split(url: str) -> SplitResult | None:
    """urlsplit, port checked, or None on failure.

    The parser's message may quote the URL, password included; callers raise
    outside the handler so the error is not even kept as ``__context__``.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return None
    return parts


@dataclass(frozen=True)
class RedisCredential:
    """A secret value: bare password or URL, with its form kept for re-rendering."""

    user: str
    password: str | None = field(repr=False)
    scheme: str | None = None  # None: bare password
    netloc_host: str = ""  # host[:port] part of the URL, as written
    path: str = ""
    query: str = ""
    fragment: str = ""
    explicit_user: bool = True  # False for ``redis://:pw@host``: keep that spelling

    @property
    def form(self) -> str:
        return "url" if self.scheme is not None else "plain"

    @classmethod
    def parse(cls, raw: str, what: str, default_user: str) -> RedisCredential:
        text = raw.strip()
        head, sep, _ = text.partition("://")
        if not sep or head.lower() not in URL_SCHEMES:
            if not raw:
                raise ConfigurationError(f"{what} is empty")
            return cls(user=default_user, password=raw)
        parts = _split(text)
        if parts is None:
            raise ConfigurationError(f"{what} is not a valid redis URL")
        userinfo, at, hostport = parts.netloc.rpartition("@")
        if not hostport:
            raise ConfigurationError(f"{what} has no host")
        user_part, colon, password_part = userinfo.partition(":")
        user = unquote(user_part)
        password = unquote(password_part) if colon else None
        return cls(
            user=user or DEFAULT_USER,
            password=password,
            scheme=parts.scheme.lower(),
            netloc_host=hostport,
            path=parts.path,
            query=parts.query,
            fragment=parts.fragment,
            explicit_user=bool(user) or not at,
        )

    def with_password(self, password: str) -> RedisCredential:
        return RedisCredential(
            user=self.user,
            password=password,
            scheme=self.scheme,
            netloc_host=self.netloc_host,
            path=self.path,
            query=self.query,
            fragment=self.fragment,
            explicit_user=self.explicit_user,
        )

    def render(self) -> str:
        if self.scheme is None:
            return self.password or ""
        user = quote(self.user, safe="") if self.explicit_user else ""
        userinfo = user + (":" + quote(self.password, safe="") if self.password is not None else "")
        netloc = f"{userinfo}@{self.netloc_host}" if userinfo else self.netloc_host
        return urlunsplit((self.scheme, netloc, self.path, self.query, self.fragment))


@dataclass(frozen=True)
class _Admin:
    """The admin credential only: where it is sent comes from the target."""

    user: str | None
    password: str | None = field(repr=False)
    ssl: bool


def _parse_admin(raw: str, name: str) -> _Admin:
    what = f"admin secret {name!r}"
    parts = _split(raw.strip())
    if parts is None:
        raise ConfigurationError(f"{what} is not a valid redis URL")
    if parts.scheme.lower() not in URL_SCHEMES:
        raise ConfigurationError(f"{what} must be a redis:// or rediss:// URL")
    return _Admin(
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        ssl=parts.scheme.lower() == "rediss",
    )


def _node_name(node: tuple[str, int]) -> str:
    host, port = node
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _target(ctx: RotationContext) -> RedisTarget:
    if not isinstance(ctx.target, RedisTarget):
        raise ConfigurationError(f"secret {ctx.secret_name}: the operator file declares no Redis target for it")
    return ctx.target


async def _password_hashes(client: aioredis.Redis, user: str) -> set[str] | None:
    """SHA-256 hashes of the user's passwords; None when the user does not exist."""
    info = await client.acl_getuser(user)
    if not info:
        return None
    raw = info.get("passwords")
    return {str(item) for item in raw} if isinstance(raw, list) else set()


async def _acl_setuser(client: aioredis.Redis, user: str, rules: Sequence[str]) -> None:
    # Not redis-py's acl_setuser: it always adds "on" or "off" and would change
    # whether the user may log in. The raw command applies only our rules.
    await client.execute_command("ACL SETUSER", user, *rules)  # type: ignore[no-untyped-call]


def _describe(exc: BaseException) -> str:
    """Class of a client error: enough to triage, never a value.

    Redis echoes the failing ACL rule in its error replies, so reply texts
    are not repeated in our messages.
    """
    return type(exc).__name__


# --------------------------------------------------------------------------
# the rotator
# --------------------------------------------------------------------------


class RedisRotator(RotatorDefaults):
    """Rotates a Redis ACL user's password on every node.

    ``password_factory`` exists so tests can inject hostile passwords; in
    production the default CSPRNG generator is used.
    """
    fences_writes = True  # each node's ACL SETUSER is fenced


    def __init__(self, password_factory: Callable[[], str] | None = None) -> None:
        self._password_factory = password_factory or generate_password

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # -- helpers ------------------------------------------------------------

    @staticmethod
    def _credential(value: str, what: str, opts: RedisTarget) -> RedisCredential:
        """A secret value, refused unless it is for the declared user on a declared node."""
        cred = RedisCredential.parse(value, what, opts.user)
        if cred.user != opts.user:
            raise ConfigurationError(f"{what} names an ACL user other than target {opts.name}'s")
        if cred.scheme is not None:
            parts = _split(f"//{cred.netloc_host}")
            node = (parts.hostname or "", parts.port or DEFAULT_PORT) if parts is not None else None
            if node is None or (node[0].lower(), node[1]) not in opts.nodes:
                raise ConfigurationError(f"{what} names a host that is not one of target {opts.name}'s nodes")
        return cred

    def _current(self, ctx: RotationContext, opts: RedisTarget) -> RedisCredential | None:
        if ctx.current is None or ctx.current.value == "":
            return None
        return self._credential(ctx.current.value, "the current secret value", opts)

    async def _admin(self, ctx: RotationContext, opts: RedisTarget) -> _Admin:
        try:
            version = await ctx.secrets.get(opts.admin_secret)
        except SecretNotFound as exc:
            raise ConfigurationError(
                f"admin secret {opts.admin_secret!r} of target {opts.name} does not exist"
            ) from exc
        admin = _parse_admin(version.value, opts.admin_secret)
        return _Admin(user=admin.user, password=admin.password, ssl=admin.ssl or opts.tls)

    @staticmethod
    def _nodes(opts: RedisTarget, admin: _Admin) -> tuple[tuple[str, int], ...]:
        return opts.nodes

    @staticmethod
    def _client(
        node: tuple[str, int], user: str | None, password: str | None, ssl: bool, opts: RedisTarget
    ) -> aioredis.Redis:
        # One fresh client per node and purpose: a pooled connection that
        # authenticated earlier would prove nothing about the password.
        return aioredis.Redis(
            host=node[0],
            port=node[1],
            username=user,
            password=password,
            ssl=ssl,
            socket_connect_timeout=opts.connect_timeout,
            socket_timeout=opts.connect_timeout,
            retry=_no_retry(),
            decode_responses=True,
            single_connection_client=True,
        )

    async def _admin_call(
        self, node: tuple[str, int], admin: _Admin, opts: RedisTarget, step: str, work: Callable[[aioredis.Redis], Any]
    ) -> Any:
        client = self._client(node, admin.user, admin.password, admin.ssl, opts)
        rejected: str | None = None
        try:
            return await work(client)
        except AuthenticationError as exc:
            raise DownstreamError(f"{step}: admin authentication refused by node {_node_name(node)}") from exc
        except ResponseError as exc:
            # The reply text repeats the ACL rule that failed: raised below,
            # outside this handler, so it is neither cause nor context.
            rejected = _describe(exc)
        except RedisError as exc:
            raise DownstreamError(f"{step}: node {_node_name(node)} failed ({_describe(exc)})") from exc
        except OSError as exc:
            raise DownstreamError(f"{step}: node {_node_name(node)} unreachable ({_describe(exc)})") from exc
        finally:
            await client.aclose()
        raise DownstreamError(f"{step}: node {_node_name(node)} rejected the command ({rejected})")

    @staticmethod
    async def _persist(client: aioredis.Redis, mode: str, node: str) -> str:
        """Write the ACL to disk; the outcome, never raised, says how.

        A failed save leaves the change live but lost on restart; that is a
        warning for the operator, not a reason to undo a working rotation.
        """
        if mode == "none":
            return "skipped"
        attempts = [mode]
        if mode == "auto":
            try:
                config = await client.config_get("aclfile")
                attempts = ["aclsave" if (config or {}).get("aclfile") else "rewrite"]
            except ResponseError:
                # CONFIG may be renamed or denied; try both ways instead.
                attempts = ["aclsave", "rewrite"]
        for attempt in attempts:
            try:
                if attempt == "aclsave":
                    await client.acl_save()
                else:
                    await client.config_rewrite()
            except ResponseError:
                continue
            return attempt
        logger.warning(
            "redis node %s: %s failed; the ACL change will not survive a restart", node, " and ".join(attempts)
        )
        return "failed"

    # -- Rotator ------------------------------------------------------------

    async def create(self, ctx: RotationContext) -> NewSecret:
        opts = _target(ctx)
        current = self._current(ctx, opts)
        password = self._password_factory()
        if not isinstance(password, str) or not password:
            raise ConfigurationError("password factory returned an unusable password")
        if current is None:
            # Nothing to keep the form of: a bare password for option user.
            current = RedisCredential(user=opts.user, password=None)
        new = current.with_password(password)
        content_type = (ctx.current.properties.content_type if ctx.current else None) or DEFAULT_CONTENT_TYPE
        state: dict[str, Any] = {"user": new.user, "form": new.form}
        logger.info("redis rotation %s: new password for user %s", ctx.rotation_id, new.user)
        return NewSecret(value=new.render(), content_type=content_type, state=state)

    def _new_credential(
        self, ctx: RotationContext, opts: RedisTarget, new: NewSecret
    ) -> tuple[RedisCredential, RedisCredential | None]:
        current = self._current(ctx, opts)
        cred = self._credential(new.value, "the new secret value", opts)
        if cred.password is None:
            raise ConfigurationError("the new secret value has no password")
        if current is not None and current.user != cred.user:
            raise ConfigurationError("the new secret's user differs from the current secret's user")
        state_user = new.state.get("user")
        if state_user is not None and state_user != cred.user:
            raise ConfigurationError("the new secret's user differs from the user chosen in create")
        return cred, current

    async def apply(self, ctx: RotationContext, new: NewSecret) -> None:
        opts = _target(ctx)
        cred, current = self._new_credential(ctx, opts, new)
        assert cred.password is not None
        admin = await self._admin(ctx, opts)
        nodes = self._nodes(opts, admin)
        rules = ["resetpass"]
        if current is not None and current.password is not None and current.password != cred.password:
            rules.append("#" + password_hash(current.password))
        rules.append("#" + password_hash(cred.password))

        # First pass changes nothing: ACL SETUSER on a missing user would
        # create it, and a node that is down should stop us before any node
        # holds a password set the others do not.
        for node in nodes:
            hashes = await self._admin_call(
                node, admin, opts, f"apply for user {cred.user}", lambda c: _password_hashes(c, cred.user)
            )
            if hashes is None:
                raise ConfigurationError(f"redis user {cred.user} does not exist on node {_node_name(node)}")

        persisted: dict[str, str] = {}
        for node in nodes:
            name = _node_name(node)

            async def work(client: aioredis.Redis, name: str = name) -> str:
                # One command, so Redis applies the whole rule list or none of it.
                await ctx.fence()
                await _acl_setuser(client, cred.user, rules)
                return await self._persist(client, opts.persist, name)

            persisted[name] = await self._admin_call(node, admin, opts, f"apply for user {cred.user}", work)
        self._record(new, persisted)
        logger.info(
            "redis rotation %s: user %s has current+new passwords on %d node(s)", ctx.rotation_id, cred.user, len(nodes)
        )

    @staticmethod
    def _record(new: NewSecret, persisted: Mapping[str, str]) -> None:
        # NewSecret is frozen, but its state is the mutable dict create() built: the
        # per-node persistence outcome goes there (nodes and modes, never a password).
        if isinstance(new.state, MutableMapping):
            new.state["persisted"] = dict(persisted)
        if any(outcome == "failed" for outcome in persisted.values()):
            logger.warning(
                "redis: ACL change not persisted on %s", ", ".join(n for n, o in persisted.items() if o == "failed")
            )

    async def _check_auth(
        self, nodes: Sequence[tuple[str, int]], opts: RedisTarget, *, ssl: bool, user: str, password: str, which: str
    ) -> None:
        for node in nodes:
            client = self._client(node, user, password, ssl, opts)
            try:
                await client.ping()
            except NoPermissionError:
                pass  # AUTH succeeded (it runs on connect); the user may just not have PING
            except AuthenticationError as exc:
                raise VerificationFailed(
                    f"verify: node {_node_name(node)} refused the {which} password of user {user}"
                ) from exc
            except (RedisError, OSError) as exc:
                raise VerificationFailed(
                    f"verify: node {_node_name(node)} failed while checking user {user} ({_describe(exc)})"
                ) from exc
            finally:
                await client.aclose()

    async def verify(self, ctx: RotationContext, new: NewSecret) -> None:
        opts = _target(ctx)
        cred, current = self._new_credential(ctx, opts, new)
        assert cred.password is not None
        admin = await self._admin(ctx, opts)
        nodes = self._nodes(opts, admin)
        ssl = opts.tls or (cred.scheme == "rediss" if cred.scheme is not None else admin.ssl)
        await self._check_auth(nodes, opts, ssl=ssl, user=cred.user, password=cred.password, which="new")
        if current is not None and current.password is not None:
            await self._check_auth(nodes, opts, ssl=ssl, user=cred.user, password=current.password, which="current")
        logger.info("redis rotation %s: user %s verified on %d node(s)", ctx.rotation_id, cred.user, len(nodes))

    async def retire(self, ctx: RotationContext, previous: SecretVersion | None) -> RetireResult:
        opts = _target(ctx)
        if previous is None or previous.value == "":
            return RetireResult(done=True, detail="no previous version")
        old = self._credential(previous.value, "the previous secret value", opts)
        current = self._current(ctx, opts)
        if old.password is None:
            return RetireResult(done=True, detail="previous version had no password")
        if current is not None and current.user == old.user and current.password == old.password:
            return RetireResult(done=True, detail="previous password is the current one; left as is")
        old_hash = password_hash(old.password)
        admin = await self._admin(ctx, opts)
        nodes = self._nodes(opts, admin)
        removed = 0
        persisted: dict[str, str] = {}
        for node in nodes:
            name = _node_name(node)

            async def work(client: aioredis.Redis, name: str = name) -> tuple[bool, str]:
                # ``!<hash>`` on an absent password is an error in Redis, and
                # the error text echoes the rule; look before removing.
                present = old_hash in (await _password_hashes(client, old.user) or set())
                if present:
                    await ctx.fence()
                    try:
                        await _acl_setuser(client, old.user, ["!" + old_hash])
                    except ResponseError:
                        # Removed concurrently between the two commands?
                        if old_hash in (await _password_hashes(client, old.user) or set()):
                            raise
                return present, await self._persist(client, opts.persist, name)

            was_present, persisted[name] = await self._admin_call(
                node, admin, opts, f"retire for user {old.user}", work
            )
            removed += int(was_present)
        failed = [n for n, o in persisted.items() if o == "failed"]
        detail = f"previous password of user {old.user} removed on {removed}/{len(nodes)} node(s)"
        if failed:
            detail += f"; NOT persisted on {', '.join(failed)} (a restart would bring it back)"
            logger.warning("redis retire %s: %s", ctx.rotation_id, detail)
        else:
            detail += "; persisted: " + ", ".join(f"{n}={o}" for n, o in persisted.items())
        logger.info("redis retire %s: %s", ctx.rotation_id, detail)
        return RetireResult(done=True, detail=detail)

    # -- liveness (optional capability used by the engine) ---------------------

    async def check(self, ctx: RotationContext, value: str) -> bool:
        """AUTH with ``value`` on every node (PING, nothing written); False if any node refuses it."""
        opts = _target(ctx)
        cred = self._credential(value, "the served secret value", opts)
        if cred.password is None:
            raise ConfigurationError("the served secret value has no password")
        admin = await self._admin(ctx, opts)
        ssl = opts.tls or (cred.scheme == "rediss" if cred.scheme is not None else admin.ssl)
        try:
            await self._check_auth(self._nodes(opts, admin), opts, ssl=ssl, user=cred.user, password=cred.password,
                                   which="served")
        except VerificationFailed as exc:
            if isinstance(exc.__cause__, AuthenticationError):
                return False
            raise DownstreamError(f"check: {exc.message}") from exc
        return True

    async def repair(self, ctx: RotationContext, value: str) -> str:
        """Add the served password back to the user on every node that lacks it; nothing is removed."""
        opts = _target(ctx)
        cred = self._credential(value, "the served secret value", opts)
        if cred.password is None:
            raise ConfigurationError("the served secret value has no password")
        admin = await self._admin(ctx, opts)
        if admin.user is not None and admin.user == cred.user:
            raise ConfigurationError(f"refusing to repair user {cred.user}: it is the admin secret's own user")
        wanted = password_hash(cred.password)
        nodes = self._nodes(opts, admin)
        repaired: list[str] = []
        for node in nodes:
            name = _node_name(node)

            async def work(client: aioredis.Redis, name: str = name) -> bool:
                hashes = await _password_hashes(client, cred.user)
                if hashes is None:
                    raise ConfigurationError(f"repair: redis user {cred.user} does not exist on node {name}")
                if wanted in hashes:
                    return False
                await ctx.fence()
                await _acl_setuser(client, cred.user, ["#" + wanted])
                await self._persist(client, opts.persist, name)
                return True

            if await self._admin_call(node, admin, opts, f"repair of user {cred.user}", work):
                repaired.append(name)
        logger.warning("redis repair %s: user %s given the served password again on %s", ctx.rotation_id, cred.user,
                       ", ".join(repaired) or "no node")
        return f"served password of user {cred.user} restored on {len(repaired)}/{len(nodes)} node(s)"
