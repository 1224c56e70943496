"""RedisRotator against real redis-server processes with ACL passwords.

Why integration: the overlap (two passwords valid at once), the per-node
changes (ACLs are not replicated) and persistence (ACL SAVE vs CONFIG
REWRITE) only mean something on servers that enforce them.
"""

from __future__ import annotations

import logging
import traceback
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio as aioredis

from shared.domain.errors import ConfigurationError, DownstreamError, VerificationFailed
from shared.domain.model import NewSecret
from shared.domain.ports import SecretReader
from shared.rotators.base import RotationContext, Rotator
from shared.rotators.redis import RedisCredential, RedisRotator, generate_password, password_hash
from tests.support.rotator_context import MemorySecrets, redis_target, version_of
from tests.support.rotator_context import make_ctx as _make_ctx
from tests.support.services import RedisServer, no_retry

ADMIN_SECRET = "redis-admin"
HOSTILE = "p@ss:w/rd 'q\"b\\s%25 ?x=y&z#frag >not<a-rule " + "Z9" * 10


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def make_ctx(current: str | None, options: Mapping[str, str], secrets: SecretReader) -> RotationContext:
    return _make_ctx("app-redis", current, options, secrets, redis_target(options, secrets, current))


def admin_url(rs: RedisServer, password: str | None = None) -> str:
    quoted = urllib.parse.quote(password or rs.admin_password, safe="")
    return f"redis://{rs.admin_user}:{quoted}@{rs.host}:{rs.port}"


def options_for(rs: RedisServer, **extra: str) -> dict[str, str]:
    nodes = ",".join(f"{host}:{port}" for host, port in rs.nodes)
    return {"admin-secret": ADMIN_SECRET, "nodes": nodes, **extra}


def secrets_for(rs: RedisServer) -> MemorySecrets:
    return MemorySecrets({ADMIN_SECRET: admin_url(rs)})


def can_auth(rs: RedisServer, user: str, password: str, node: int = 0) -> bool:
    try:
        with rs.client(user, password, node=node) as client:
            return bool(client.ping())
    except (redis.exceptions.AuthenticationError, redis.exceptions.NoPermissionError):
        return False


def hashes(rs: RedisServer, user: str, node: int = 0) -> set[str]:
    with rs.client(node=node) as admin:
        info = admin.acl_getuser(user)
    assert info, f"user {user} missing"
    return {h.decode() if isinstance(h, bytes) else str(h) for h in info["passwords"]}


def make_user(rs: RedisServer, user: str, password: str, commands: tuple[str, ...] = ("+get", "+set", "+ping")) -> None:
    for node in range(len(rs.nodes)):
        with rs.client(node=node) as admin:
            admin.execute_command("ACL SETUSER", user, "on", f">{password}", "~app:*", *commands)


async def rotate(rotator: Rotator, ctx: RotationContext) -> NewSecret:
    new = await rotator.create(ctx)
    await rotator.apply(ctx, new)
    await rotator.verify(ctx, new)
    return new


def password_of(value: str) -> str:
    cred = RedisCredential.parse(value, "test", "default")
    assert cred.password is not None
    return cred.password


@pytest.fixture
def no_aclfile_server() -> Iterator[RedisServer]:
    with RedisServer(use_aclfile=False) as rs:
        yield rs


@pytest.fixture
def replicated_server() -> Iterator[RedisServer]:
    with RedisServer(replicas=2) as rs:
        yield rs


# --------------------------------------------------------------------------
# overlap and retire
# --------------------------------------------------------------------------


async def test_after_apply_both_passwords_authenticate_and_after_retire_only_new(
    redis_server_fresh: RedisServer,
) -> None:
    rs = redis_server_fresh
    old_password = generate_password()
    make_user(rs, "svc", old_password)
    # Hand-quoted on purpose, independent of the rotator's own URL builder.
    quoted = urllib.parse.quote(old_password, safe="")
    old_value = f"redis://svc:{quoted}@{rs.host}:{rs.port}/0"
    assert password_of(old_value) == old_password
    rotator = RedisRotator()
    secrets = secrets_for(rs)

    new = await rotate(rotator, make_ctx(old_value, options_for(rs), secrets))
    new_password = password_of(new.value)

    assert can_auth(rs, "svc", old_password)
    assert can_auth(rs, "svc", new_password)
    assert hashes(rs, "svc") == {password_hash(old_password), password_hash(new_password)}

    result = await rotator.retire(
        make_ctx(new.value, options_for(rs), secrets), previous=version_of("app-redis", old_value, "v1")
    )

    assert result.done
    assert not can_auth(rs, "svc", old_password)
    assert can_auth(rs, "svc", new_password)
    again = await rotator.retire(  # idempotent: the old password is already gone
        make_ctx(new.value, options_for(rs), secrets), previous=version_of("app-redis", old_value, "v1")
    )
    assert again.done
    assert "0/1" in again.detail
    assert can_auth(rs, "svc", new_password)


async def test_apply_keeps_the_users_other_rules(redis_server_fresh: RedisServer) -> None:
    rs = redis_server_fresh
    old_password = generate_password()
    make_user(rs, "svc", old_password)
    with rs.client() as admin:
        before = admin.acl_getuser("svc")
    old_value = RedisCredential(user="svc", password=old_password, scheme="redis", netloc_host=f"{rs.host}:{rs.port}")

    await rotate(RedisRotator(), make_ctx(old_value.render(), options_for(rs), secrets_for(rs)))

    with rs.client() as admin:
        after = admin.acl_getuser("svc")
    assert before is not None and after is not None
    before.pop("passwords")
    after.pop("passwords")
    assert after == before  # on, key patterns, commands untouched


async def test_user_without_ping_permission_still_verifies(redis_server_fresh: RedisServer) -> None:
    rs = redis_server_fresh
    old_password = generate_password()
    make_user(rs, "reader", old_password, commands=("+get",))
    old_value = RedisCredential(
        user="reader", password=old_password, scheme="redis", netloc_host=f"{rs.host}:{rs.port}"
    )

    new = await rotate(RedisRotator(), make_ctx(old_value.render(), options_for(rs), secrets_for(rs)))

    assert can_auth(rs, "reader", password_of(new.value)) is False  # can_auth PINGs: NOPERM, not a login failure
    with rs.client("reader", password_of(new.value)) as client:
        assert client.get("app:missing") is None


async def test_apply_twice_with_different_new_values_drops_the_orphan(redis_server_fresh: RedisServer) -> None:
    rs = redis_server_fresh
    current = rs.default_password
    rotator = RedisRotator()
    ctx = make_ctx(current, options_for(rs), secrets_for(rs))
    orphan = await rotator.create(ctx)
    await rotator.apply(ctx, orphan)
    # crash before the vault write; the next delivery sees the same current value

    new = await rotate(rotator, ctx)

    assert not can_auth(rs, "default", orphan.value)
    assert can_auth(rs, "default", new.value)
    assert can_auth(rs, "default", current)
    assert hashes(rs, "default") == {password_hash(current), password_hash(new.value)}


async def test_apply_replaces_the_previous_but_one_password(redis_server_fresh: RedisServer) -> None:
    rs = redis_server_fresh
    rotator = RedisRotator()
    options, secrets = options_for(rs), secrets_for(rs)
    first = rs.default_password
    second = await rotate(rotator, make_ctx(first, options, secrets))
    # retire never ran (e.g. consumers never acknowledged); rotate again

    third = await rotate(rotator, make_ctx(second.value, options, secrets))

    assert not can_auth(rs, "default", first)
    assert hashes(rs, "default") == {password_hash(second.value), password_hash(third.value)}


# --------------------------------------------------------------------------
# forms
# --------------------------------------------------------------------------


async def test_default_user_plain_password_secret_stays_plain(redis_server_fresh: RedisServer) -> None:
    rs = redis_server_fresh
    rotator = RedisRotator()
    secrets = secrets_for(rs)

    new = await rotate(rotator, make_ctx(rs.default_password, options_for(rs), secrets))

    assert "://" not in new.value
    assert new.state["user"] == "default"
    assert new.state["form"] == "plain"
    assert can_auth(rs, "default", new.value)
    assert can_auth(rs, "default", rs.default_password)
    with rs.client(None, new.value) as client:  # AUTH <password> alone means the default user
        assert client.acl_whoami() == "default"

    await rotator.retire(
        make_ctx(new.value, options_for(rs), secrets), previous=version_of("app-redis", rs.default_password, "v1")
    )
    assert not can_auth(rs, "default", rs.default_password)


async def test_named_user_url_keeps_its_form_and_other_parts(redis_server_fresh: RedisServer) -> None:
    rs = redis_server_fresh
    old_password = generate_password()
    make_user(rs, "svc", old_password, commands=("+get", "+ping", "+select", "+acl|whoami"))
    old_value = RedisCredential(
        user="svc",
        password=old_password,
        scheme="redis",
        netloc_host=f"{rs.host}:{rs.port}",
        path="/2",
        query="socket_timeout=5&health_check_interval=0",
    ).render()

    new = await rotate(RedisRotator(), make_ctx(old_value, options_for(rs, user="svc"), secrets_for(rs)))

    before, after = urlsplit(old_value), urlsplit(new.value)
    assert (after.scheme, after.hostname, after.port, after.path, after.query) == (
        before.scheme,
        before.hostname,
        before.port,
        before.path,
        before.query,
    )
    assert after.username == "svc"
    assert new.state == {"user": "svc", "form": "url", "persisted": {f"{rs.host}:{rs.port}": "aclsave"}}
    client = aioredis.from_url(new.value, retry=no_retry())
    try:
        assert await client.acl_whoami() == "svc"
    finally:
        await client.aclose()


async def test_url_without_user_keeps_the_implicit_default_user(redis_server_fresh: RedisServer) -> None:
    rs = redis_server_fresh
    old_value = f"redis://:{rs.default_password}@{rs.host}:{rs.port}"

    new = await rotate(RedisRotator(), make_ctx(old_value, options_for(rs), secrets_for(rs)))

    assert new.value.startswith("redis://:")
    assert new.state["user"] == "default"
    client = aioredis.from_url(new.value, retry=no_retry())
    try:
        assert await client.acl_whoami() == "default"
    finally:
        await client.aclose()


@pytest.mark.parametrize("form", ["url", "plain"])
async def test_password_with_special_characters_round_trips(redis_server_fresh: RedisServer, form: str) -> None:
    rs = redis_server_fresh
    current = rs.default_password
    if form == "url":
        current = RedisCredential(
            user="default", password=current, scheme="redis", netloc_host=f"{rs.host}:{rs.port}"
        ).render()

    new = await rotate(
        RedisRotator(password_factory=lambda: HOSTILE), make_ctx(current, options_for(rs), secrets_for(rs))
    )

    assert password_of(new.value) == HOSTILE
    assert can_auth(rs, "default", HOSTILE)
    if form == "url":
        client = aioredis.from_url(new.value, retry=no_retry())
        try:
            assert await client.ping()
        finally:
            await client.aclose()


# --------------------------------------------------------------------------
# replicas and persistence
# --------------------------------------------------------------------------


async def test_every_replica_is_updated_verified_and_retired(replicated_server: RedisServer) -> None:
    rs = replicated_server
    old_password = generate_password()
    make_user(rs, "svc", old_password)
    old_value = RedisCredential(
        user="svc", password=old_password, scheme="redis", netloc_host=f"{rs.host}:{rs.port}"
    ).render()
    rotator = RedisRotator()
    secrets = secrets_for(rs)

    new = await rotate(rotator, make_ctx(old_value, options_for(rs), secrets))
    new_password = password_of(new.value)

    assert len(new.state["persisted"]) == 3
    for node in range(3):
        assert can_auth(rs, "svc", old_password, node=node)
        assert can_auth(rs, "svc", new_password, node=node)

    await rotator.retire(make_ctx(new.value, options_for(rs), secrets), previous=version_of("x", old_value, "v1"))

    for node in range(3):
        assert not can_auth(rs, "svc", old_password, node=node)
        assert can_auth(rs, "svc", new_password, node=node)


async def test_verify_fails_when_a_replica_lacks_the_new_password(replicated_server: RedisServer) -> None:
    rs = replicated_server
    rotator = RedisRotator()
    ctx = make_ctx(rs.default_password, options_for(rs), secrets_for(rs))
    new = await rotator.create(ctx)
    await rotator.apply(ctx, new)
    with rs.client(node=2) as replica:
        replica.execute_command("ACL SETUSER", "default", "!" + password_hash(new.value))

    with pytest.raises(VerificationFailed, match=str(rs.nodes[2][1])) as info:
        await rotator.verify(ctx, new)
    assert new.value not in "".join(traceback.format_exception(info.value))


async def test_acl_save_persists_the_change_to_the_aclfile(redis_server_fresh: RedisServer) -> None:
    rs = redis_server_fresh
    assert rs.acl_path is not None
    before = rs.acl_path.read_text()
    rotator = RedisRotator()
    secrets = secrets_for(rs)

    new = await rotate(rotator, make_ctx(rs.default_password, options_for(rs), secrets))

    after = rs.acl_path.read_text()
    assert after != before
    assert password_hash(new.value) in after
    assert new.value not in after
    assert set(new.state["persisted"].values()) == {"aclsave"}

    result = await rotator.retire(
        make_ctx(new.value, options_for(rs), secrets), previous=version_of("x", rs.default_password, "v1")
    )
    assert password_hash(rs.default_password) not in rs.acl_path.read_text()
    assert "aclsave" in result.detail

    rs.stop()
    rs.start()
    assert can_auth(rs, "default", new.value)
    assert not can_auth(rs, "default", rs.default_password)


async def test_config_rewrite_persists_the_change_without_aclfile(no_aclfile_server: RedisServer) -> None:
    rs = no_aclfile_server
    rotator = RedisRotator()

    new = await rotate(rotator, make_ctx(rs.default_password, options_for(rs), secrets_for(rs)))

    assert set(new.state["persisted"].values()) == {"rewrite"}
    assert password_hash(new.value) in rs.config_path.read_text()
    rs.stop()
    rs.start()
    assert can_auth(rs, "default", new.value)


async def test_failed_persistence_is_reported_not_raised(
    no_aclfile_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    rs = no_aclfile_server
    caplog.set_level(logging.WARNING)

    new = await rotate(
        RedisRotator(), make_ctx(rs.default_password, options_for(rs, persist="aclsave"), secrets_for(rs))
    )

    assert set(new.state["persisted"].values()) == {"failed"}
    assert any("not survive a restart" in r.getMessage() for r in caplog.records)
    assert can_auth(rs, "default", new.value)


async def test_persist_none_skips_saving(redis_server_fresh: RedisServer) -> None:
    rs = redis_server_fresh
    assert rs.acl_path is not None
    before = rs.acl_path.read_text()

    new = await rotate(RedisRotator(), make_ctx(rs.default_password, options_for(rs, persist="none"), secrets_for(rs)))

    assert set(new.state["persisted"].values()) == {"skipped"}
    assert rs.acl_path.read_text() == before


# --------------------------------------------------------------------------
# errors and secrecy
# --------------------------------------------------------------------------


async def test_wrong_admin_password_is_downstream_error_without_secret(redis_server_fresh: RedisServer) -> None:
    rs = redis_server_fresh
    wrong = "Wrong-" + generate_password()
    secrets = MemorySecrets({ADMIN_SECRET: admin_url(rs, wrong)})
    ctx = make_ctx(rs.default_password, options_for(rs), secrets)
    rotator = RedisRotator()
    new = await rotator.create(ctx)

    with pytest.raises(DownstreamError, match="admin") as info:
        await rotator.apply(ctx, new)

    rendered = "".join(traceback.format_exception(info.value))
    for secret in (wrong, new.value, rs.default_password):
        assert secret not in rendered
    assert hashes(rs, "default") == {password_hash(rs.default_password)}


async def test_missing_user_is_configuration_error_and_creates_nothing(redis_server_fresh: RedisServer) -> None:
    rs = redis_server_fresh
    ctx = make_ctx(None, options_for(rs, user="ghost"), secrets_for(rs))
    rotator = RedisRotator()
    new = await rotator.create(ctx)

    with pytest.raises(ConfigurationError, match="ghost"):
        await rotator.apply(ctx, new)

    with rs.client() as admin:
        assert admin.acl_getuser("ghost") is None


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"nodes": "127.0.0.1:1"}, "adminSecret"),
        ({"admin-secret": ADMIN_SECRET, "persist": "sometimes"}, "persist"),
        ({"admin-secret": ADMIN_SECRET, "nodes": "host:notaport"}, "nodes"),
        ({"admin-secret": ADMIN_SECRET, "connect-timeout": "soon"}, "connectTimeoutSeconds"),
        ({"admin-secret": ADMIN_SECRET, "user": "two words"}, "user"),
    ],
)
async def test_a_bad_target_is_a_configuration_error_naming_the_key(options: dict[str, str], match: str) -> None:
    """Targets come from the operator file, whose parser names the bad key before anything connects."""
    with pytest.raises(ConfigurationError, match=match):
        await RedisRotator().create(make_ctx("pw-" + uuid.uuid4().hex, options, MemorySecrets()))


async def test_admin_secret_missing_from_vault_is_configuration_error(redis_server_fresh: RedisServer) -> None:
    rs = redis_server_fresh
    ctx = make_ctx(rs.default_password, options_for(rs), MemorySecrets())
    rotator = RedisRotator()
    new = await rotator.create(ctx)

    with pytest.raises(ConfigurationError, match=ADMIN_SECRET):
        await rotator.apply(ctx, new)


async def test_unparseable_url_secret_error_does_not_leak_it() -> None:
    value = "redis://svc:Secret-" + uuid.uuid4().hex + "@host:port-not-a-number/0"
    with pytest.raises(ConfigurationError) as info:
        await RedisRotator().create(make_ctx(value, {"admin-secret": ADMIN_SECRET}, MemorySecrets()))
    assert value.split(":")[2].split("@")[0] not in "".join(traceback.format_exception(info.value))
    assert info.value.__context__ is None


async def test_no_password_in_logs_or_repr(redis_server_fresh: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    rs = redis_server_fresh
    caplog.set_level(logging.DEBUG)
    marker = uuid.uuid4().hex
    rotator = RedisRotator(password_factory=lambda: f"pw-{marker}-x" * 3)
    secrets = secrets_for(rs)

    new = await rotate(rotator, make_ctx(rs.default_password, options_for(rs), secrets))
    await rotator.retire(
        make_ctx(new.value, options_for(rs), secrets), previous=version_of("x", rs.default_password, "v")
    )

    text = "\n".join(f"{r.getMessage()} {r.__dict__!r}" for r in caplog.records if r.name.startswith("shared."))
    assert caplog.records
    assert marker not in text
    assert rs.default_password not in text
    assert rs.admin_password not in text
    assert marker not in repr(new)
    assert marker not in repr(RedisCredential.parse(new.value, "x", "default"))
