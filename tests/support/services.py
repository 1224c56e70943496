"""Throw-away PostgreSQL, Redis and Azurite servers for the test-suite.

Why this module exists: the rotators change real passwords, and the only way
to prove a password change is a server that *enforces* passwords. The
services pre-started on the development machines (PostgreSQL with trust
auth, Redis without a password) accept anything, so they prove nothing.
Every class here starts its own private server on a free loopback port in a
temporary directory, with authentication switched on, and removes every
trace of it on exit (including when a test or the start-up itself fails).

The module is plain Python on purpose (no pytest import) so the same servers
can be used from a REPL or a script while debugging a rotator.

Missing binaries are reported with a pointer to ``scripts/bootstrap.sh``,
which installs everything a fresh machine lacks.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psycopg.conninfo
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "AZURITE_ACCOUNT_KEY",
    "AZURITE_ACCOUNT_NAME",
    "Azurite",
    "PostgresServer",
    "RedisServer",
    "ServiceError",
    "ServiceNotInstalledError",
    "free_port",
    "no_retry",
    "wait_for_port",
]

LOOPBACK = "127.0.0.1"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP_HINT = "run `bash scripts/bootstrap.sh` from the project root to install it"

# Azurite's built-in development account. The key is published in Microsoft's
# documentation and only works against the local emulator.
AZURITE_ACCOUNT_NAME = "devstoreaccount1"
AZURITE_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class ServiceError(RuntimeError):
    """A test server could not be started or stopped."""


class ServiceNotInstalledError(ServiceError):
    """A binary a test server needs is missing from this machine."""


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free right now on ``host``.

    The kernel picks it (bind to port 0), which avoids clashes with the
    machine's pre-started services and between parallel test sessions. There
    is a small window before the server binds it; the server classes retry
    with a new port if they lose that race.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    host: str,
    port: int,
    timeout: float = 10.0,
    *,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Block until something accepts TCP connections on ``host:port``.

    Polling the port (rather than sleeping a fixed time) keeps start-up as
    short as the server allows. When ``proc`` is given, a process that dies
    while we wait is reported at once instead of after the full timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"process exited with code {proc.returncode} before {host}:{port} opened")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.1f}s") from None
            time.sleep(0.05)


def no_retry() -> Retry:
    """A redis-py retry policy that never retries.

    redis-py 8 retries failed commands (a refused AUTH included) with
    exponential back-off by default, which turns every expected failure into
    a multi-second stall; tests that expect a failure want it immediately.
    """
    return Retry(NoBackoff(), 0)


def redis_command(client: redis.Redis, *args: str) -> Any:
    """Send one raw command (``ACL SETUSER`` rules, ``CLIENT KILL``) as ``redis-cli`` would.

    Tests state ACL rules verbatim rather than through redis-py's ``acl_setuser``,
    which reshapes them; redis-py leaves ``execute_command`` unannotated."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _make_password() -> str:
    """Random password made of URL- and config-safe characters.

    Hex avoids quoting problems in redis.conf, ACL rules (``>pw``) and
    connection strings while still being unguessable.
    """
    return secrets.token_hex(16)


def _tail(path: Path, lines: int = 30) -> str:
    """Last lines of a log file, for error messages that explain themselves."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a child politely (SIGTERM), then by force if it lingers."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class _Service:
    """Shared context-manager and clean-up plumbing.

    ``close`` is also registered with :mod:`atexit` while the server runs, so
    an interpreter that exits without unwinding the ``with`` block (e.g. an
    interrupted pytest session) still does not leave servers behind.
    """

    _tmp: Path | None = None

    def start(self) -> None:
        raise NotImplementedError

    def _shutdown(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop the server(s) if running and delete the temporary directory."""
        atexit.unregister(self.close)
        try:
            self._shutdown()
        finally:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None

    def __enter__(self) -> Self:
        atexit.register(self.close)
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


def _find_pg_bindir() -> Path:
    """Locate the directory holding ``initdb``/``pg_ctl``/``postgres``.

    Debian keeps them in ``/usr/lib/postgresql/<major>/bin`` (not on PATH);
    ``PG_BINDIR`` overrides the search for unusual installs.
    """
    override = os.environ.get("PG_BINDIR")
    if override:
        return Path(override)
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise ServiceNotInstalledError(f"PostgreSQL's initdb was not found; {BOOTSTRAP_HINT}")


class PostgresServer(_Service):
    """A private PostgreSQL cluster that enforces SCRAM-SHA-256 passwords.

    Every connection (TCP on 127.0.0.1 and the unix socket, which lives in
    the temporary directory) needs a SCRAM password, so a test can prove that
    a rotated password works and the old one no longer does.

    PostgreSQL refuses to run as root, so when the tests run as root the
    cluster is created and run as the ``postgres`` OS user via ``runuser``
    and the temporary directory is handed to that user.

    ``stop()``/``kill()`` followed by ``start()`` reuse the same data
    directory and port, so a test can simulate "PostgreSQL is down" and
    recover with all roles and passwords intact.
    """

    superuser = "postgres"

    def __init__(
        self,
        *,
        log_statement: str = "all",
        port: int | None = None,
        os_user: str = "postgres",
        start_timeout: float = 30.0,
    ) -> None:
        self.host = LOOPBACK
        self.port = port if port is not None else free_port()
        self._port_fixed = port is not None
        self.password = _make_password()
        self.log_statement = log_statement
        self.start_timeout = start_timeout
        self._bindir = _find_pg_bindir()
        self._as_root = os.geteuid() == 0
        self._os_user = os_user
        self._initialised = False
        self._running = False
        self._tmp = Path(tempfile.mkdtemp(prefix="kv-pg-"))
        self.data_dir = self._tmp / "data"
        self.socket_dir = self._tmp
        self.log_path = self._tmp / "postgres.log"
        if self._as_root:
            shutil.chown(self._tmp, user=os_user, group=os_user)

    # -- connection strings -------------------------------------------------

    def dsn(self, user: str, password: str | None, dbname: str = "postgres") -> str:
        """libpq connection string for ``user`` over TCP.

        Built with :func:`psycopg.conninfo.make_conninfo` so quoting of any
        password is libpq's own rule, never hand-made. Note the result is in
        libpq's ``key=value`` form, which every libpq/psycopg API accepts.
        """
        return psycopg.conninfo.make_conninfo(
            "",
            host=self.host,
            port=self.port,
            user=user,
            password=password,
            dbname=dbname,
            connect_timeout=5,
        )

    @property
    def admin_dsn(self) -> str:
        """Superuser connection string (see :meth:`dsn`)."""
        return self.dsn(self.superuser, self.password)

    # -- life cycle -----------------------------------------------------------

    def _run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool, as the ``postgres`` user when we are root."""
        cmd: list[str] = [str(self._bindir / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", self._os_user, "--", *cmd]
        return subprocess.run(
            cmd,
            cwd=self._tmp,  # the postgres user cannot read root's cwd
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _initdb(self) -> None:
        assert self._tmp is not None
        pwfile = self._tmp / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self._as_root:
            shutil.chown(pwfile, user=self._os_user, group=self._os_user)
        try:
            res = self._run(
                "initdb",
                "-D", str(self.data_dir),
                "-U", self.superuser,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",  # a throw-away cluster needs no fsync
                "--no-instructions",
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            raise ServiceError(f"initdb failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        self._write_config()
        # Pre-create the log readable by everyone so tests that do not run as
        # the postgres user can grep it; pg_ctl appends to it.
        self.log_path.touch(mode=0o644)
        self.log_path.chmod(0o644)
        if self._as_root:
            shutil.chown(self.log_path, user=self._os_user, group=self._os_user)
        self._initialised = True

    def _write_config(self) -> None:
        settings = {
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "password_encryption": "'scram-sha-256'",
            "log_statement": f"'{self.log_statement}'",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
            "log_connections": "on",
            "logging_collector": "off",
            # Durability is pointless for a throw-away cluster; speed is not.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "50",
            "shared_buffers": "16MB",
        }
        lines = [f"{key} = {value}" for key, value in settings.items()]
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# --- tests/support/services.py ---\n" + "\n".join(lines) + "\n")

    def start(self) -> None:
        """Create the cluster on first use, then start it and wait until ready."""
        if self._running:
            return
        attempts = 1 if self._port_fixed or self._initialised else 3
        for attempt in range(attempts):
            if not self._initialised:
                self._initdb()
            res = self._run(
                "pg_ctl", "start",
                "-D", str(self.data_dir),
                "-l", str(self.log_path),
                "-w", "-t", str(int(self.start_timeout)),
            )  # fmt: skip
            if res.returncode == 0:
                self._running = True
                return
            log = _tail(self.log_path)
            lost_port_race = "could not bind" in log or "already in use" in log
            if lost_port_race and attempt + 1 < attempts:
                # Another process grabbed the port between free_port() and bind:
                # start over with a fresh cluster on a new port.
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self._initialised = False
                self.port = free_port()
                continue
            raise ServiceError(f"pg_ctl start failed ({res.returncode}):\n{res.stderr}\n--- log ---\n{log}")

    def _pg_stop(self, mode: str) -> None:
        if not self._running:
            return
        res = self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30")
        if res.returncode != 0 and "is the server running" not in res.stderr:
            raise ServiceError(f"pg_ctl stop -m {mode} failed:\n{res.stderr}")
        self._running = False

    def stop(self) -> None:
        """Shut down cleanly (fast mode: open sessions are disconnected)."""
        self._pg_stop("fast")

    def kill(self) -> None:
        """Shut down abruptly, like a crash (``immediate`` mode; recovery runs on start)."""
        self._pg_stop("immediate")

    @property
    def running(self) -> bool:
        """Whether this object believes the server is up."""
        return self._running

    def _shutdown(self) -> None:
        if self._running:
            try:
                self._pg_stop("fast")
            except ServiceError:
                self._pg_stop("immediate")

    def log_text(self) -> str:
        """Whole server log so far (statements appear with log_statement=all)."""
        return self.log_path.read_text(errors="replace")


# --------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------


class _RedisNode:
    """One redis-server process (primary or replica) and its files."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir()
        self.port = free_port()
        self.config_path = self.dir / "redis.conf"
        self.acl_path = self.dir / "users.acl"
        self.log_path = self.dir / "redis.log"
        self.stderr_path = self.dir / "stderr.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.configured = False


class RedisServer(_Service):
    """A private redis-server (plus optional replicas) with ACL passwords.

    Users:

    * ``admin`` (``admin_password``) may do everything; replicas use it to
      authenticate to the primary;
    * ``default`` has a password too (``default_password``), so a client
      without credentials is refused, as on a hardened production server.

    With ``use_aclfile=True`` (default) the users live in an ACL file, so
    ``ACL SAVE`` persists changes; with ``use_aclfile=False`` they are
    ``user`` lines in ``redis.conf`` and ``CONFIG REWRITE`` is the way to
    persist. Rotators must support both, hence both shapes.

    The config file is written once; ``stop()``/``start()`` restart the same
    processes on the same ports, so whatever was persisted survives, exactly
    like a real restart.
    """

    admin_user = "admin"

    def __init__(
        self,
        *,
        use_aclfile: bool = True,
        replicas: int = 0,
        start_timeout: float = 10.0,
    ) -> None:
        self.host = LOOPBACK
        self.use_aclfile = use_aclfile
        self.admin_password = _make_password()
        self.default_password = _make_password()
        self.start_timeout = start_timeout
        self._binary = shutil.which("redis-server")
        if self._binary is None:
            raise ServiceNotInstalledError(f"redis-server was not found; {BOOTSTRAP_HINT}")
        self._tmp = Path(tempfile.mkdtemp(prefix="kv-redis-"))
        self._nodes = [_RedisNode(self._tmp, "primary")]
        self._nodes += [_RedisNode(self._tmp, f"replica{i + 1}") for i in range(replicas)]

    # -- addresses and files --------------------------------------------------

    @property
    def port(self) -> int:
        """Port of the primary."""
        return self._nodes[0].port

    @property
    def nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node, primary first."""
        return [(self.host, node.port) for node in self._nodes]

    @property
    def config_path(self) -> Path:
        """The primary's redis.conf."""
        return self._nodes[0].config_path

    @property
    def acl_path(self) -> Path | None:
        """The primary's ACL file, or ``None`` when users live in redis.conf."""
        return self._nodes[0].acl_path if self.use_aclfile else None

    @property
    def log_path(self) -> Path:
        """The primary's server log."""
        return self._nodes[0].log_path

    def config_paths(self) -> list[Path]:
        """redis.conf of every node, primary first."""
        return [node.config_path for node in self._nodes]

    def acl_paths(self) -> list[Path]:
        """ACL file of every node, primary first (empty without aclfile)."""
        return [node.acl_path for node in self._nodes] if self.use_aclfile else []

    def client(
        self,
        username: str | None = None,
        password: str | None = None,
        *,
        node: int = 0,
        **kwargs: Any,
    ) -> redis.Redis:
        """A redis-py client for one node that fails fast (no retries).

        Defaults to the admin credentials; pass ``username``/``password``
        explicitly to try others (``username=None`` with a password means
        the ``default`` user).
        """
        if username is None and password is None:
            username, password = self.admin_user, self.admin_password
        kwargs.setdefault("socket_timeout", 5)
        kwargs.setdefault("socket_connect_timeout", 5)
        return redis.Redis(
            host=self.host,
            port=self._nodes[node].port,
            username=username,
            password=password,
            retry=no_retry(),
            **kwargs,
        )

    # -- configuration ----------------------------------------------------------

    def _user_rules(self) -> list[str]:
        return [
            f"user {self.admin_user} on >{self.admin_password} ~* &* +@all",
            f"user default on >{self.default_password} ~* &* +@all",
        ]

    def _write_config(self, node: _RedisNode, primary_port: int | None) -> None:
        def q(value: object) -> str:
            # redis.conf accepts double-quoted arguments with C-style escapes.
            return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

        lines = [
            f"port {node.port}",
            f"bind {self.host}",
            "protected-mode yes",
            "daemonize no",
            f"dir {q(node.dir)}",
            f"logfile {q(node.log_path)}",
            'save ""',
            "appendonly no",
            "loglevel notice",
            # The default 5 s wait for more replicas before a diskless full
            # sync would dominate start-up; nothing here needs batching.
            "repl-diskless-sync-delay 0",
        ]
        if self.use_aclfile:
            node.acl_path.write_text("\n".join(self._user_rules()) + "\n")
            lines.append(f"aclfile {q(node.acl_path)}")
        else:
            lines += self._user_rules()
        if primary_port is not None:
            lines += [
                f"replicaof {self.host} {primary_port}",
                f"masteruser {self.admin_user}",
                f"masterauth {self.admin_password}",
                "replica-read-only yes",
            ]
        node.config_path.write_text("\n".join(lines) + "\n")
        node.configured = True

    # -- life cycle -----------------------------------------------------------------

    def _wait_ready(self, node: _RedisNode, is_replica: bool) -> None:
        """Wait until *this* process answers with our credentials.

        A bare port check is not enough: if another process won the race for
        the port, it would answer instead while our redis-server exits with
        "Address already in use". So the loop also watches our process and
        only accepts an authenticated PING (primary) or an established
        replication link (replica).
        """
        assert node.proc is not None
        deadline = time.monotonic() + self.start_timeout
        index = self._nodes.index(node)
        with contextlib.closing(self.client(node=index, socket_timeout=1, socket_connect_timeout=1)) as cli:
            while True:
                if node.proc.poll() is not None:
                    raise ServiceError(f"redis-server exited with code {node.proc.returncode}")
                try:
                    if not is_replica and cli.ping():
                        return
                    if is_replica and cli.info("replication").get("master_link_status") == "up":
                        return
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                    pass  # not listening yet (BusyLoadingError is a ConnectionError too)
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"redis node {node.name} not ready after {self.start_timeout}s")
                time.sleep(0.05)

    def _start_node(self, index: int) -> None:
        node = self._nodes[index]
        if node.proc is not None and node.proc.poll() is None:
            return
        primary_port = None if index == 0 else self._nodes[0].port
        first_start = not node.configured
        for attempt in range(3 if first_start else 1):
            if not node.configured:
                self._write_config(node, primary_port)
            with node.stderr_path.open("ab") as err:
                node.proc = subprocess.Popen(
                    [str(self._binary), str(node.config_path)],
                    cwd=node.dir,
                    stdin=subprocess.DEVNULL,
                    stdout=err,
                    stderr=err,
                )
            try:
                self._wait_ready(node, is_replica=index > 0)
                return
            except (ServiceError, TimeoutError) as exc:
                _terminate(node.proc)
                log = _tail(node.log_path) + "\n" + _tail(node.stderr_path)
                if first_start and attempt < 2 and "Address already in use" in log:
                    node.port = free_port()
                    node.configured = False
                    continue
                raise ServiceError(f"redis node {node.name} failed to start: {exc}\n--- log ---\n{log}") from exc

    def _indices(self, node: int | None) -> list[int]:
        return list(range(len(self._nodes))) if node is None else [node]

    def start(self, node: int | None = None) -> None:
        """Start one node (index, 0 = primary) or all, primary first."""
        for index in self._indices(node):
            self._start_node(index)

    def stop(self, node: int | None = None) -> None:
        """Shut down one node or all (SIGTERM; nothing is saved: ``save ""``)."""
        for index in reversed(self._indices(node)):
            proc = self._nodes[index].proc
            if proc is not None:
                _terminate(proc)

    def kill(self, node: int | None = None) -> None:
        """SIGKILL one node or all, like a crash."""
        for index in reversed(self._indices(node)):
            proc = self._nodes[index].proc
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(5)

    @property
    def running(self) -> bool:
        """Whether every node's process is alive."""
        return all(self.node_running(index) for index in range(len(self._nodes)))

    def node_running(self, node: int) -> bool:
        """Whether one node's process (0 = primary) is alive."""
        proc = self._nodes[node].proc
        return proc is not None and proc.poll() is None

    def _shutdown(self) -> None:
        self.stop()


# --------------------------------------------------------------------------
# Azurite (Azure Blob Storage emulator)
# --------------------------------------------------------------------------


class Azurite(_Service):
    """Azurite's blob service on a free port with its workspace in a temp dir.

    Blob leases are what the rotation lock is built on, so tests need a
    server that really implements lease semantics (409 on a second acquire,
    expiry, break); Azurite does. ``--skipApiVersionCheck`` lets a newer
    azure-storage-blob talk to it without waiting for an Azurite release.

    Azurite is installed per project in ``.tools/azurite`` by
    ``scripts/bootstrap.sh``.
    """

    account_name = AZURITE_ACCOUNT_NAME
    account_key = AZURITE_ACCOUNT_KEY

    def __init__(
        self,
        *,
        tools_dir: Path | None = None,
        start_timeout: float = 20.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.host = LOOPBACK
        self.port = free_port()
        self.start_timeout = start_timeout
        self.extra_args = list(extra_args)
        tools = tools_dir if tools_dir is not None else PROJECT_ROOT / ".tools" / "azurite"
        self.binary = tools / "node_modules" / ".bin" / "azurite-blob"
        if not self.binary.exists():
            raise ServiceNotInstalledError(f"Azurite is not installed at {self.binary}; {BOOTSTRAP_HINT}")
        if shutil.which("node") is None:
            raise ServiceNotInstalledError(f"node (needed by Azurite) was not found; {BOOTSTRAP_HINT}")
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix="kv-azurite-"))
        self.location = self._tmp / "data"
        self.location.mkdir()
        self.log_path = self._tmp / "azurite.log"

    @property
    def blob_endpoint(self) -> str:
        """Path-style blob endpoint of the emulator account."""
        return f"http://{self.host}:{self.port}/{self.account_name}"

    @property
    def connection_string(self) -> str:
        """Storage connection string for the well-known emulator account."""
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={self.account_name};"
            f"AccountKey={self.account_key};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    def _command(self) -> list[str]:
        return [
            str(self.binary),
            "--blobHost", self.host,
            "--blobPort", str(self.port),
            "--location", str(self.location),
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--silent",
            *self.extra_args,
        ]  # fmt: skip

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        """Wait until our Azurite answers HTTP on the port.

        Checks the ``Server: Azurite-Blob`` header and that our process is
        still alive, so a foreign process that grabbed the port in the
        meantime is not mistaken for the emulator.
        """
        wait_for_port(self.host, self.port, self.start_timeout, proc=proc)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if proc.poll() is not None:
                raise ServiceError(f"Azurite exited with code {proc.returncode}")
            conn = http.client.HTTPConnection(self.host, self.port, timeout=1)
            try:
                conn.request("GET", f"/{self.account_name}?comp=list")
                response = conn.getresponse()
                response.read()
                if response.getheader("Server", "").startswith("Azurite-Blob"):
                    return
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            if time.monotonic() >= deadline:
                raise TimeoutError(f"Azurite did not answer on {self.host}:{self.port} after {self.start_timeout}s")
            time.sleep(0.05)

    def start(self) -> None:
        """Start the emulator (same port and data on a restart) and wait for it."""
        if self._proc is not None and self._proc.poll() is None:
            return
        first_start = self._proc is None
        for attempt in range(3 if first_start else 1):
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    self._command(),
                    cwd=self._tmp,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            try:
                self._wait_ready(self._proc)
                return
            except (ServiceError, TimeoutError) as exc:
                _terminate(self._proc)
                text = _tail(self.log_path)
                if first_start and attempt < 2 and "EADDRINUSE" in text:
                    self.port = free_port()
                    continue
                raise ServiceError(f"Azurite failed to start: {exc}\n--- log ---\n{text}") from exc

    def stop(self) -> None:
        """Stop the emulator (data in ``location`` is kept for a restart)."""
        if self._proc is not None:
            _terminate(self._proc)

    def kill(self) -> None:
        """SIGKILL the emulator, like a crash."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)

    @property
    def running(self) -> bool:
        """Whether the emulator process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _shutdown(self) -> None:
        self.stop()
