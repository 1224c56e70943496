"""PostgresRotator against a real SCRAM-only PostgreSQL.

Why integration: the claims that matter (the old login keeps working during
the overlap, the retired one stops, objects stay owned by the owner role, the
password never reaches the server log) are only provable on a server that
enforces passwords and logs every statement.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from shared.domain.errors import ConfigurationError, DownstreamError, VerificationFailed
from shared.domain.model import NewSecret
from shared.domain.ports import SecretReader
from shared.rotators.base import RotationContext, Rotator
from shared.rotators.postgres import ConnInfo, PostgresRotator, build_conninfo_uri, generate_password
from tests.support.rotator_context import MemorySecrets, postgres_target, version_of
from tests.support.rotator_context import make_ctx as _make_ctx
from tests.support.services import PostgresServer

ADMIN_SECRET = "pg-admin"
HOSTILE = "p@ss:w/rd 'q\"b\\s%25 ?x=y&z#frag " + "Z9" * 10


# --------------------------------------------------------------------------
# helpers: an in-memory SecretReader (our own port) and context builders
# --------------------------------------------------------------------------


def make_ctx(current: str | None, options: Mapping[str, str], secrets: SecretReader) -> RotationContext:
    return _make_ctx("app-db", current, options, secrets, postgres_target(options, secrets, current))


def can_login(dsn: str) -> bool:
    try:
        psycopg.connect(dsn).close()
    except psycopg.OperationalError:
        return False
    return True


def authid(pg: PostgresServer) -> dict[str, Any]:
    """Every role and its password verifier: to prove "nothing changed"."""
    with psycopg.connect(pg.admin_dsn) as conn:
        rows = conn.execute("SELECT rolname, rolpassword, rolcanlogin FROM pg_authid ORDER BY rolname").fetchall()
    return {name: (password, login) for name, password, login in rows}


def rolpassword(pg: PostgresServer, role: str) -> str | None:
    with psycopg.connect(pg.admin_dsn) as conn:
        row = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [role]).fetchone()
    assert row is not None, f"role {role} missing"
    value: str | None = row[0]
    return value


async def rotate(rotator: Rotator, ctx: RotationContext) -> NewSecret:
    """create + apply + verify, as the engine does before the vault write."""
    new = await rotator.create(ctx)
    await rotator.apply(ctx, new)
    await rotator.verify(ctx, new)
    return new


@dataclass
class Roles:
    """Two login roles, their owner and a schema the owner holds, unique per test."""

    pg: PostgresServer
    blue: str
    green: str
    owner: str
    schema: str
    blue_password: str

    @property
    def options(self) -> dict[str, str]:
        return {
            "admin-secret": ADMIN_SECRET,
            "roles": f"{self.blue},{self.green}",
            "owner-role": self.owner,
        }

    def secrets(self) -> MemorySecrets:
        return MemorySecrets({ADMIN_SECRET: self.pg.admin_dsn})

    def blue_dsn(self) -> str:
        return self.pg.dsn(self.blue, self.blue_password)


def _drop_roles(pg: PostgresServer, names: list[str], schema: str | None = None) -> None:
    with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
        if schema is not None:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        for name in names:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone()
            if exists:
                conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(name)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def roles(postgres_server: PostgresServer) -> Iterator[Roles]:
    suffix = uuid.uuid4().hex[:8]
    r = Roles(
        pg=postgres_server,
        blue=f"app_blue_{suffix}",
        green=f"app_green_{suffix}",
        owner=f"app_owner_{suffix}",
        schema=f"s_{suffix}",
        blue_password=generate_password(),
    )
    blue, green, owner = (sql.Identifier(n) for n in (r.blue, r.green, r.owner))
    with psycopg.connect(postgres_server.admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(owner))
        conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(sql.Identifier(r.schema), owner))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN INHERIT PASSWORD {}").format(blue, sql.Literal(r.blue_password)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN INHERIT").format(green))
        for login in (blue, green):
            conn.execute(sql.SQL("GRANT {} TO {}").format(owner, login))
            conn.execute(sql.SQL("ALTER ROLE {} SET role = {}").format(login, sql.Literal(r.owner)))
    yield r
    _drop_roles(postgres_server, [r.blue, r.green, r.owner], r.schema)


@pytest.fixture
def single_role(postgres_server: PostgresServer) -> Iterator[tuple[str, str]]:
    role, password = f"app_single_{uuid.uuid4().hex[:8]}", generate_password()
    with psycopg.connect(postgres_server.admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
    yield role, password
    _drop_roles(postgres_server, [role])


# --------------------------------------------------------------------------
# URI builder (no server needed)
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"user": "u", "password": HOSTILE, "host": "db.example.com", "port": "5432", "dbname": "app db"},
        {"user": "u", "password": "x", "host": "h1,h2", "port": "5432,5433", "dbname": "d", "sslmode": "require"},
        {"user": "u", "password": "x", "host": "h1,h2", "port": "5432", "target_session_attrs": "read-write"},
        {"user": "u", "password": "x", "host": "::1", "port": "5432"},
        {"user": "u", "password": "x", "host": "/var/run/postgresql", "dbname": "d"},
        {"user": "u", "password": "x", "host": "h", "options": "-c search_path=a,b -c statement_timeout=5s"},
        {"user": "u", "password": "x", "hostaddr": "10.0.0.1", "application_name": "a&b=c d?e/f"},
        {"user": "üser", "password": "pässwörd €", "host": "h"},
    ],
)
def test_uri_builder_round_trips_through_libpq(params: dict[str, str]) -> None:
    uri = build_conninfo_uri(params)
    assert uri.startswith("postgresql://")
    assert conninfo_to_dict(uri) == params


def test_generated_passwords_are_long_random_and_exercise_quoting() -> None:
    passwords = {generate_password() for _ in range(200)}
    assert len(passwords) == 200
    assert all(len(p) >= 32 for p in passwords)
    assert any(set(p) & set("@:/%") for p in passwords)


def test_conninfo_repr_hides_password() -> None:
    parsed = ConnInfo.parse(make_conninfo(user="u", password=HOSTILE, host="h"), "test")
    assert HOSTILE not in repr(parsed)
    assert HOSTILE not in repr(PostgresRotator(password_factory=lambda: HOSTILE))


# --------------------------------------------------------------------------
# alternating strategy
# --------------------------------------------------------------------------


async def test_alternating_apply_keeps_old_login_working_and_new_login_valid(roles: Roles) -> None:
    rotator = PostgresRotator()
    ctx = make_ctx(roles.blue_dsn(), roles.options, roles.secrets())

    new = await rotate(rotator, ctx)

    assert new.state["role"] == roles.green
    assert new.state["strategy"] == "alternating"
    assert conninfo_to_dict(new.value)["user"] == roles.green
    assert can_login(roles.blue_dsn()), "current credential must keep working during the overlap"
    assert can_login(new.value)
    assert (rolpassword(roles.pg, roles.green) or "").startswith("SCRAM-SHA-256$")


async def test_alternating_retire_sets_previous_role_password_null_and_old_login_fails(roles: Roles) -> None:
    rotator = PostgresRotator()
    secrets = roles.secrets()
    old_version = version_of("app-db", roles.blue_dsn(), "v1")
    new = await rotate(rotator, make_ctx(old_version.value, roles.options, secrets))
    # ... engine commits new.value as v2 and consumers move on ...
    ctx_after = make_ctx(new.value, roles.options, secrets)

    result = await rotator.retire(ctx_after, previous=old_version)

    assert result.done
    assert rolpassword(roles.pg, roles.blue) is None
    assert not can_login(roles.blue_dsn())
    assert can_login(new.value)
    again = await rotator.retire(ctx_after, previous=old_version)  # idempotent
    assert again.done
    assert can_login(new.value)


async def test_alternating_next_rotation_returns_to_first_role(roles: Roles) -> None:
    rotator = PostgresRotator()
    secrets = roles.secrets()
    v1 = version_of("app-db", roles.blue_dsn(), "v1")
    second = await rotate(rotator, make_ctx(v1.value, roles.options, secrets))
    await rotator.retire(make_ctx(second.value, roles.options, secrets), previous=v1)

    third = await rotate(rotator, make_ctx(second.value, roles.options, secrets))

    assert third.state["role"] == roles.blue
    assert can_login(third.value)
    assert can_login(second.value)
    assert not can_login(roles.blue_dsn())


async def test_retire_is_a_no_op_when_previous_uses_the_current_role(roles: Roles) -> None:
    rotator = PostgresRotator()
    ctx = make_ctx(roles.blue_dsn(), roles.options, roles.secrets())
    older_blue = version_of("app-db", roles.pg.dsn(roles.blue, "an-older-password"), "v0")

    result = await rotator.retire(ctx, previous=older_blue)

    assert result.done
    assert can_login(roles.blue_dsn())


async def test_objects_created_by_either_login_role_belong_to_owner_and_data_is_shared(roles: Roles) -> None:
    rotator = PostgresRotator()
    green = await rotate(rotator, make_ctx(roles.blue_dsn(), roles.options, roles.secrets()))
    blue_table = sql.Identifier(roles.schema, "from_blue")
    green_table = sql.Identifier(roles.schema, "from_green")

    with psycopg.connect(roles.blue_dsn(), autocommit=True) as blue_conn:
        assert blue_conn.execute("SELECT session_user::text, current_user::text").fetchone() == (
            roles.blue,
            roles.owner,
        )
        blue_conn.execute(sql.SQL("CREATE TABLE {} (v text)").format(blue_table))
        blue_conn.execute(sql.SQL("INSERT INTO {} VALUES ('written by blue')").format(blue_table))
    with psycopg.connect(green.value, autocommit=True) as green_conn:
        rows = green_conn.execute(sql.SQL("SELECT v FROM {}").format(blue_table)).fetchall()
        assert rows == [("written by blue",)]
        green_conn.execute(sql.SQL("INSERT INTO {} VALUES ('written by green')").format(blue_table))
        green_conn.execute(sql.SQL("CREATE TABLE {} (v text)").format(green_table))
    with psycopg.connect(roles.blue_dsn()) as blue_conn:
        seen = blue_conn.execute(sql.SQL("SELECT count(*) FROM {}").format(blue_table)).fetchone()
        assert seen == (2,)
        blue_conn.execute(sql.SQL("DROP TABLE {}").format(green_table))  # owner's object: blue may drop it
        blue_conn.rollback()
    with psycopg.connect(roles.pg.admin_dsn) as admin:
        owners = admin.execute(
            "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = %s ORDER BY 1", [roles.schema]
        ).fetchall()
    assert owners == [("from_blue", roles.owner), ("from_green", roles.owner)]


async def test_apply_reasserts_set_role_and_membership_that_drifted(roles: Roles) -> None:
    with psycopg.connect(roles.pg.admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER ROLE {} RESET role").format(sql.Identifier(roles.green)))
        admin.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(roles.owner), sql.Identifier(roles.green)))

    new = await rotate(PostgresRotator(), make_ctx(roles.blue_dsn(), roles.options, roles.secrets()))

    with psycopg.connect(new.value) as conn:
        assert conn.execute("SELECT current_user::text").fetchone() == (roles.owner,)


async def test_verify_fails_when_set_role_is_missing(roles: Roles) -> None:
    rotator = PostgresRotator()
    ctx = make_ctx(roles.blue_dsn(), roles.options, roles.secrets())
    new = await rotator.create(ctx)
    await rotator.apply(ctx, new)
    with psycopg.connect(roles.pg.admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER ROLE {} RESET role").format(sql.Identifier(roles.green)))

    with pytest.raises(VerificationFailed, match="SET ROLE"):
        await rotator.verify(ctx, new)


async def test_verify_fails_when_login_roles_have_different_memberships(roles: Roles) -> None:
    rotator = PostgresRotator()
    ctx = make_ctx(roles.blue_dsn(), roles.options, roles.secrets())
    new = await rotator.create(ctx)
    await rotator.apply(ctx, new)
    with psycopg.connect(roles.pg.admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(sql.Identifier(roles.green)))

    with pytest.raises(VerificationFailed, match="memberships"):
        await rotator.verify(ctx, new)


async def test_verify_fails_when_new_password_was_never_applied(roles: Roles) -> None:
    rotator = PostgresRotator()
    ctx = make_ctx(roles.blue_dsn(), roles.options, roles.secrets())
    new = await rotator.create(ctx)

    with pytest.raises(VerificationFailed, match=roles.green) as info:
        await rotator.verify(ctx, new)
    assert str(conninfo_to_dict(new.value)["password"]) not in "".join(traceback.format_exception(info.value))


async def test_alternating_without_current_value_starts_with_first_role_from_admin_template(roles: Roles) -> None:
    rotator = PostgresRotator()
    new = await rotate(rotator, make_ctx(None, roles.options, roles.secrets()))

    params = conninfo_to_dict(new.value)
    assert params["user"] == roles.blue
    assert params["host"] == roles.pg.host
    assert params["port"] == str(roles.pg.port)


async def test_alternating_rejects_current_user_outside_the_two_roles(roles: Roles) -> None:
    ctx = make_ctx(roles.pg.admin_dsn, roles.options, roles.secrets())
    with pytest.raises(ConfigurationError, match="neither"):
        await PostgresRotator().create(ctx)


async def test_apply_refuses_to_repassword_the_role_in_use(roles: Roles) -> None:
    ctx = make_ctx(roles.blue_dsn(), roles.options, roles.secrets())
    forged = NewSecret(value=roles.pg.dsn(roles.blue, generate_password()), content_type="x", state={})
    before = authid(roles.pg)

    with pytest.raises(ConfigurationError, match="current"):
        await PostgresRotator().apply(ctx, forged)

    assert authid(roles.pg) == before
    assert can_login(roles.blue_dsn())


async def test_create_roles_true_creates_missing_login_and_owner_roles(postgres_server: PostgresServer) -> None:
    suffix = uuid.uuid4().hex[:8]
    names = [f"new_blue_{suffix}", f"new_green_{suffix}", f"new_owner_{suffix}"]
    options = {
        "admin-secret": ADMIN_SECRET,
        "roles": f"{names[0]},{names[1]}",
        "owner-role": names[2],
        "create-roles": "true",
    }
    try:
        new = await rotate(
            PostgresRotator(), make_ctx(None, options, MemorySecrets({ADMIN_SECRET: postgres_server.admin_dsn}))
        )
        assert can_login(new.value)
        with psycopg.connect(postgres_server.admin_dsn) as conn:
            rows = conn.execute(
                "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY(%s) ORDER BY rolname", [names]
            ).fetchall()
        assert dict(rows) == {names[0]: True, names[1]: True, names[2]: False}
    finally:
        _drop_roles(postgres_server, names)


async def test_missing_roles_without_create_roles_is_configuration_error_and_creates_nothing(
    postgres_server: PostgresServer,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    options = {"admin-secret": ADMIN_SECRET, "roles": f"nb_{suffix},ng_{suffix}", "owner-role": f"no_{suffix}"}
    ctx = make_ctx(None, options, MemorySecrets({ADMIN_SECRET: postgres_server.admin_dsn}))
    before = authid(postgres_server)
    rotator = PostgresRotator()
    new = await rotator.create(ctx)

    with pytest.raises(ConfigurationError, match="createRoles"):
        await rotator.apply(ctx, new)
    assert authid(postgres_server) == before


# --------------------------------------------------------------------------
# single strategy
# --------------------------------------------------------------------------


async def test_single_new_password_works_and_old_is_rejected(
    postgres_server: PostgresServer, single_role: tuple[str, str]
) -> None:
    role, old_password = single_role
    old_dsn = postgres_server.dsn(role, old_password)
    options = {"admin-secret": ADMIN_SECRET}  # role comes from the current secret
    ctx = make_ctx(old_dsn, options, MemorySecrets({ADMIN_SECRET: postgres_server.admin_dsn}))
    rotator = PostgresRotator()

    new = await rotate(rotator, ctx)

    assert new.state == {"strategy": "single", "role": role, "form": "keyvalue"}
    assert can_login(new.value)
    assert not can_login(old_dsn)
    result = await rotator.retire(make_ctx(new.value, options, ctx.secrets), previous=ctx.current)
    assert result.done
    assert can_login(new.value)


async def test_single_crash_after_apply_rolls_forward_on_next_delivery(
    postgres_server: PostgresServer, single_role: tuple[str, str]
) -> None:
    role, old_password = single_role
    old_dsn = postgres_server.dsn(role, old_password)
    options = {"admin-secret": ADMIN_SECRET, "strategy": "single", "roles": role}
    ctx = make_ctx(old_dsn, options, MemorySecrets({ADMIN_SECRET: postgres_server.admin_dsn}))
    rotator = PostgresRotator()
    abandoned = await rotator.create(ctx)
    await rotator.apply(ctx, abandoned)
    # crash: the vault still serves old_dsn, which no longer works (documented)
    assert not can_login(old_dsn)

    new = await rotate(rotator, ctx)

    assert can_login(new.value)
    assert not can_login(abandoned.value)


# --------------------------------------------------------------------------
# crash recovery (alternating)
# --------------------------------------------------------------------------


async def test_alternating_crash_after_apply_then_fresh_rotation_converges(roles: Roles) -> None:
    rotator = PostgresRotator()
    ctx = make_ctx(roles.blue_dsn(), roles.options, roles.secrets())
    abandoned = await rotator.create(ctx)
    await rotator.apply(ctx, abandoned)
    # crash before the vault write: the next delivery sees the same current value

    new = await rotate(rotator, ctx)

    assert new.state["role"] == abandoned.state["role"] == roles.green
    assert not can_login(abandoned.value), "the abandoned password must not work after the second apply"
    assert can_login(new.value)
    assert can_login(roles.blue_dsn()), "the current credential keeps working throughout"


# --------------------------------------------------------------------------
# forms and hostile passwords
# --------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
async def test_uri_form_is_kept_with_every_other_parameter(roles: Roles, scheme: str) -> None:
    current = build_conninfo_uri(
        {
            "user": roles.blue,
            "password": roles.blue_password,
            "host": roles.pg.host,
            "port": str(roles.pg.port),
            "dbname": "postgres",
            "sslmode": "disable",
            "application_name": "billing api",
            "connect_timeout": "7",
        },
        scheme=scheme,
    )
    assert can_login(current)

    new = await rotate(PostgresRotator(), make_ctx(current, roles.options, roles.secrets()))

    assert new.value.startswith(f"{scheme}://")
    assert new.state["form"] == "uri"
    before, after = conninfo_to_dict(current), conninfo_to_dict(new.value)
    for params in (before, after):
        params.pop("user")
        params.pop("password")
    assert after == before


async def test_keyvalue_form_is_kept_with_every_other_parameter(roles: Roles) -> None:
    current = make_conninfo(
        "",
        host=roles.pg.host,
        port=roles.pg.port,
        dbname="postgres",
        user=roles.blue,
        password=roles.blue_password,
        application_name="billing api",
        sslmode="prefer",
        keepalives_idle=30,
    )

    new = await rotate(PostgresRotator(), make_ctx(current, roles.options, roles.secrets()))

    assert "://" not in new.value
    assert new.state["form"] == "keyvalue"
    before, after = conninfo_to_dict(current), conninfo_to_dict(new.value)
    assert after["user"] == roles.green
    for params in (before, after):
        params.pop("user")
        params.pop("password")
    assert after == before


@pytest.mark.parametrize("form", ["uri", "keyvalue"])
async def test_password_with_special_characters_round_trips(roles: Roles, form: str) -> None:
    current = roles.blue_dsn()
    if form == "uri":
        current = build_conninfo_uri({k: str(v) for k, v in conninfo_to_dict(current).items() if v is not None})
    rotator = PostgresRotator(password_factory=lambda: HOSTILE)

    new = await rotate(rotator, make_ctx(current, roles.options, roles.secrets()))

    assert conninfo_to_dict(new.value)["password"] == HOSTILE
    assert ("://" in new.value) == (form == "uri")
    with psycopg.connect(new.value) as conn:
        assert conn.execute("SELECT session_user::text").fetchone() == (roles.green,)


async def test_plaintext_password_never_reaches_server_log_nor_our_logs(
    roles: Roles, caplog: pytest.LogCaptureFixture
) -> None:
    marker = uuid.uuid4().hex
    password = f"Unique-{marker}-pw@:/%"
    log_start = len(roles.pg.log_text())
    caplog.set_level(logging.DEBUG)

    new = await rotate(
        PostgresRotator(password_factory=lambda: password), make_ctx(roles.blue_dsn(), roles.options, roles.secrets())
    )

    assert conninfo_to_dict(new.value)["password"] == password
    server_log = roles.pg.log_text()[log_start:]
    assert "ALTER ROLE" in server_log
    assert "SCRAM-SHA-256$" in server_log  # what was sent: the verifier
    assert marker not in server_log
    ours = "\n".join(f"{r.getMessage()} {r.args!r} {getattr(r, '__dict__', {})!r}" for r in caplog.records)
    assert caplog.records, "the rotator should log its steps"
    assert marker not in ours
    assert roles.blue_password not in ours
    assert marker not in repr(new)


# --------------------------------------------------------------------------
# bad input: clear error class, nothing changed
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unparseable-conninfo", ConfigurationError),
        ("unknown-strategy", ConfigurationError),
        ("missing-admin-secret-option", ConfigurationError),
        ("admin-secret-not-in-vault", ConfigurationError),
        ("role-with-quote-and-semicolon", ConfigurationError),
        ("owner-with-semicolon", ConfigurationError),
        ("alternating-with-one-role", ConfigurationError),
        ("bad-connect-timeout", ConfigurationError),
    ],
)
async def test_bad_input_raises_clear_error_and_changes_nothing(
    roles: Roles, case: str, expected: type[Exception]
) -> None:
    options = roles.options
    current = roles.blue_dsn()
    secrets = roles.secrets()
    if case == "unparseable-conninfo":
        current = f"host={roles.pg.host} user={roles.blue} password='{roles.blue_password}"  # unterminated quote
    elif case == "unknown-strategy":
        options["strategy"] = "triple"
    elif case == "missing-admin-secret-option":
        del options["admin-secret"]
    elif case == "admin-secret-not-in-vault":
        secrets = MemorySecrets({})
        current = ""  # forces the admin secret to be read as the template
    elif case == "role-with-quote-and-semicolon":
        options["roles"] = f'{roles.blue},x"; DROP ROLE {roles.green}; --'
    elif case == "owner-with-semicolon":
        options["owner-role"] = "owner;drop"
    elif case == "alternating-with-one-role":
        options["strategy"] = "alternating"
        options["roles"] = roles.blue
    elif case == "bad-connect-timeout":
        options["connect-timeout"] = "soon"
    before = authid(roles.pg)
    rotator = PostgresRotator()

    with pytest.raises(expected) as info:
        # A bad target is refused where the operator file is parsed, before anything connects.
        ctx = make_ctx(current, options, secrets)
        new = await rotator.create(ctx)
        await rotator.apply(ctx, new)

    assert authid(roles.pg) == before
    rendered = "".join(traceback.format_exception(info.value))
    assert roles.blue_password not in rendered
    if case == "unparseable-conninfo":
        # libpq's message quotes the input: it must not even hang on as context.
        assert info.value.__cause__ is None
        assert info.value.__context__ is None


async def test_wrong_admin_password_is_downstream_error_without_secret(roles: Roles) -> None:
    wrong = "Wrong-" + generate_password()
    secrets = MemorySecrets({ADMIN_SECRET: roles.pg.dsn(roles.pg.superuser, wrong)})
    ctx = make_ctx(roles.blue_dsn(), roles.options, secrets)
    rotator = PostgresRotator()
    new = await rotator.create(ctx)
    before = authid(roles.pg)

    with pytest.raises(DownstreamError, match="admin") as info:
        await rotator.apply(ctx, new)

    rendered = "".join(traceback.format_exception(info.value))
    for secret in (wrong, roles.blue_password, conninfo_to_dict(new.value)["password"]):
        assert str(secret) not in rendered
    assert authid(roles.pg) == before
