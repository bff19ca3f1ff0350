"""``detnas tracking serve``: a study's own MLflow tracking server, for a cluster.

Every job of a cluster study writing one SQLite file on a shared filesystem is what SQLite's
locking does not survive ("database is locked", corrupted stores). Instead one process on the
login node takes every job's records, for one results folder:

- PostgreSQL, the backend store: a database cluster in ``<results>/tracking-server/pg`` (made by
  ``initdb`` the first time), answering on 127.0.0.1 only (no unix socket), for one role with a
  password (SCRAM);
- ``mlflow server`` on it, with MLflow's ``basic-auth`` app: runs, params, metrics and tags go to
  PostgreSQL, artifacts (uploaded through the server) to `layout.ARTIFACTS` under the
  results folder, where a local store keeps them too.

Jobs log to it over HTTP with ``tracking.uri: server`` (`SERVER`): `detnas.run.tracking` reads the
URL and the credentials from `STATE`, so the server may move to another port or node between
runs. Stopping and starting it again keeps every record (the database stays in the folder).

Only its owner can use it. Both passwords are generated once and kept in `STATE` (mode 0600), the
one file that names them; MLflow has one user, the owner, as its admin, and grants nobody else
anything (``default_permission = NO_PERMISSIONS``): any other request, a read as much as a write,
is answered 401. PostgreSQL takes only the password's holder, on loopback. As root (CI), where
PostgreSQL refuses to run, it runs as the ``postgres`` user of the distribution's package, which
owns ``pg/`` and nothing else of the study. Linux only (process checks through /proc).
"""

from __future__ import annotations

import base64
import contextlib
import glob
import os
import pwd
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from detnas.io import atomic_write, load_json, save_json
from detnas.plan import layout
from detnas.plan.config import SERVER

STATE = "server.json"
"""In the server's folder (`layout.TRACKING_SERVER`), mode 0600: its URL, ports, process and its
secrets (MLflow's user ``username``/``password``, PostgreSQL's ``pg_password``, the ``secret_key``
of MLflow's CSRF protection)."""
ROLE = "detnas"  # the PostgreSQL role and the MLflow user (the admin)
DATABASES = ("mlflow", "mlflow_auth")  # the tracking store, MLflow's user store
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 180  # seconds for `mlflow server` to answer (its workers import MLflow)


def folder(results: str | Path) -> Path:
    return Path(results) / layout.TRACKING_SERVER


def connection(results: str | Path) -> tuple[str, str, str]:
    """``(url, username, password)`` of the server of the results folder ``results``.

    Raises:
        ValueError: no server was started for it, it was stopped, or its credentials cannot be
            read (another user's): one line naming the file and what to do.
    """
    path = folder(results) / STATE
    try:
        state = load_json(path)
    except PermissionError:
        raise ValueError(f"tracking.uri {SERVER}: {path} is not readable: the tracking server "
                         "belongs to the user who started it") from None
    except ValueError:
        if path.exists():
            raise
        raise ValueError(f"tracking.uri {SERVER}: no tracking server was started for the "
                         f"results folder {results} ({path} is missing): start it with "
                         "`detnas tracking serve --config CONFIG`") from None
    if not state.get("running"):
        raise ValueError(f"tracking.uri {SERVER}: the tracking server of {results} is stopped "
                         f"({path}): start it with `detnas tracking serve --config CONFIG`")
    return state["uri"], state["username"], state["password"]


def _pg_bin() -> Path:
    """The folder of PostgreSQL's server programs: that of ``initdb`` on PATH (conda's
    ``postgresql``), else the newest ``/usr/lib/postgresql/*/bin`` (Debian's package)."""
    found = [p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p, "initdb").is_file()]
    found += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                    key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
                    reverse=True)
    for path in found:
        if all(Path(path, name).is_file() for name in ("initdb", "pg_ctl", "createdb")):
            return Path(path)
    raise ValueError("detnas tracking serve: PostgreSQL's initdb is not installed (not on PATH, "
                     "nor in /usr/lib/postgresql/*/bin): apt-get install postgresql, or conda "
                     "install -c conda-forge postgresql")


def _pg_user() -> pwd.struct_passwd | None:
    """Whom PostgreSQL runs as: the caller (None), or ``postgres`` where the caller is root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise ValueError("detnas tracking serve: PostgreSQL refuses to run as root, and this "
                         "machine has no user postgres to run it as: run it as a regular user, "
                         "or install the postgresql package (which adds that user)") from None


def _as(user: pwd.struct_passwd | None) -> dict:
    """`subprocess` arguments that run a program as ``user`` (None: as the caller)."""
    return {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _run(args: list, user: pwd.struct_passwd | None, cwd: Path, what: str,
         env: dict | None = None, ok: str | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    """Run a PostgreSQL program (as ``user``, where given); a failure is one ValueError with its
    last line, unless its output holds ``ok`` or ``check`` is false."""
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=120, start_new_session=True,
                          **_as(user))
    if check and proc.returncode != 0 and not (ok and ok in proc.stdout + proc.stderr):
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        raise ValueError(f"detnas tracking serve: {what} failed: "
                         f"{lines[-1].strip() if lines else f'exit {proc.returncode}'}")
    return proc


def _port_free(host: str, port: int) -> bool:
    """Whether a server can listen on ``host``:``port`` (as PostgreSQL and uvicorn do, with
    SO_REUSEADDR: the connections a stopped server left in TIME_WAIT do not hold it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _alive(pid: int | None) -> bool:
    """Whether ``pid`` is a live ``mlflow server`` (not a zombie, not a reused pid)."""
    try:
        return pid is not None and b"mlflow" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _request(url: str, auth: tuple[str, str] | None = None) -> int:
    """The HTTP status of a GET of ``url`` (0: no answer)."""
    req = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def _last_line(path: Path) -> str:
    """The log's last error line (else its last line)."""
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"[\w.]*(Error|Exception): ", line)]
    return (errors or lines or ["no output"])[-1].strip()[:300]


def _postgres(root: Path, state: dict, user: pwd.struct_passwd | None) -> None:
    """Make (the first time) and start the database cluster in ``root/pg``; sets
    ``state["pg_port"]``."""
    bin_dir, pg = _pg_bin(), root / "pg"
    pg.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        os.chown(pg, user.pw_uid, user.pw_gid)
        if _run(["test", "-w", pg], user, "/", "", check=False).returncode != 0:
            raise ValueError(f"detnas tracking serve: PostgreSQL runs as user postgres (it "
                             f"refuses root) and cannot reach {pg}: let it through the folders "
                             "above it (chmod o+x), or run serve as a regular user")
    data = pg / "data"
    if not (data / "PG_VERSION").exists():
        pwfile = pg / "pwfile"
        atomic_write(pwfile, lambda f: f.write(state["pg_password"].encode()), 0o600)
        if user is not None:
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        try:
            _run([bin_dir / "initdb", "-D", data, "-U", ROLE, f"--pwfile={pwfile}",
                  "--auth=scram-sha-256", "--encoding=UTF8", "--no-locale"], user, pg, "initdb")
        finally:
            pwfile.unlink(missing_ok=True)
        # loopback TCP with the password only; no unix socket (none to guard)
        (data / "pg_hba.conf").write_text(f"host all {ROLE} {LOOPBACK}/32 scram-sha-256\n")
        with open(data / "postgresql.conf", "a") as f:
            f.write(f"\n# detnas tracking serve\nlisten_addresses = '{LOOPBACK}'\n"
                    "unix_socket_directories = ''\nmax_connections = 300\n")
    ctl = [bin_dir / "pg_ctl", "-D", data]
    if _run([*ctl, "status"], user, pg, "", check=False).returncode == 0:
        state["pg_port"] = int((data / "postmaster.pid").read_text().splitlines()[3])  # its port
        return
    port = state.get("pg_port")
    state["pg_port"] = port if port and _port_free(LOOPBACK, port) else _free_port(LOOPBACK)
    _run([*ctl, "-l", pg / "postgres.log", "-w", "-t", "60", "-o", f"-p {state['pg_port']}",
          "start"], user, pg, f"PostgreSQL (log: {pg / 'postgres.log'})")
    for name in DATABASES:
        _run([bin_dir / "createdb", "-h", LOOPBACK, "-p", state["pg_port"], "-U", ROLE, name],
             None, root, f"createdb {name}", {"PGPASSWORD": state["pg_password"]},
             ok="already exists")


def serve(results: str | Path, host: str = LOOPBACK, port: int = 0, workers: int = 4) -> dict:
    """Start the tracking server of the results folder ``results`` (PostgreSQL and ``mlflow
    server`` on ``host``:``port``, 0: the previous port where free, else any), in the background;
    returns its state (`STATE`). A server already running is left as it is.

    Raises:
        ValueError: PostgreSQL missing, a port taken, a program that failed (one line).
    """
    root = folder(results).resolve()  # absolute: PostgreSQL's programs run in pg/
    path = root / STATE
    state = load_json(path) if path.exists() else {
        "username": ROLE, "password": secrets.token_urlsafe(24),
        "pg_password": secrets.token_urlsafe(24), "secret_key": secrets.token_urlsafe(24)}
    if state.get("running") and _alive(state.get("pid")):
        return state
    user = _pg_user()
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700 if user is None else 0o711)  # 0711: postgres passes through to pg/
    state["running"] = False
    save_json(path, state, 0o600)  # the passwords, before anything uses them
    _postgres(root, state, user)
    save_json(path, state, 0o600)

    port = port or state.get("port") or 0
    if port and not _port_free(host, port):
        raise ValueError(f"detnas tracking serve: --port {port}: in use on {host}")
    port = port or _free_port(host)
    proc, url = _start_mlflow(root, Path(results), state, host, port, workers)
    _check_started(proc, url, root, state)
    state.update(uri=url, host=host, port=port, pid=proc.pid, running=True,
                 pg_user=user.pw_name if user else None)
    save_json(path, state, 0o600)
    return state


def _start_mlflow(root: Path, results: Path, state: dict, host: str, port: int,
                  workers: int) -> tuple[subprocess.Popen, str]:
    """Start ``mlflow server`` on the PostgreSQL of ``root`` (basic auth, its owner the one user,
    its log root/mlflow.log); its process and URL."""
    name = socket.getfqdn() if host in ("0.0.0.0", "::", "") else host
    url = f"http://{name}:{port}"
    db = f"postgresql://{ROLE}@{LOOPBACK}:{state['pg_port']}"  # the password: PGPASSWORD
    ini = root / "basic_auth.ini"
    atomic_write(ini, lambda f: f.write(
        f"[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = {db}/{DATABASES[1]}\n"
        f"admin_username = {state['username']}\nadmin_password = {state['password']}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # one user whose password never changes: check its hash once a minute, not per request
        "auth_cache_ttl_seconds = 60\n".encode()), 0o600)
    args = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
            f"{db}/{DATABASES[0]}", "--artifacts-destination",
            str((results / layout.ARTIFACTS).resolve()), "--host", host, "--port", str(port),
            "--workers", str(workers), "--app-name", "basic-auth",
            "--uvicorn-opts", "--timeout-graceful-shutdown 5"]  # a stop waits for no client
    if name not in (LOOPBACK, "localhost"):  # MLflow answers only the Host names it is told
        args += ["--allowed-hosts", f"{name}:{port},{name},localhost:{port},{LOOPBACK}:{port}",
                 "--cors-allowed-origins", url]
    log = root / "mlflow.log"
    with open(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as out:
        proc = subprocess.Popen(args, cwd=root, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={
                                    **os.environ, "PGPASSWORD": state["pg_password"],
                                    "MLFLOW_AUTH_CONFIG_PATH": str(ini),
                                    "MLFLOW_FLASK_SERVER_SECRET_KEY": state["secret_key"],
                                    "MLFLOW_BASIC_AUTH_FAIL_CLOSED": "true"})
    return proc, url


def _check_started(proc: subprocess.Popen, url: str, root: Path, state: dict) -> None:
    """Wait for the server ``proc`` at ``url`` to answer, and check that it takes its owner's
    credentials.

    Raises:
        ValueError: it ended, did not answer in `START_TIMEOUT` s, or refused them (it is then
            stopped).
    """
    log = root / "mlflow.log"
    deadline = time.monotonic() + START_TIMEOUT
    while _request(f"{url}/health") == 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            _kill(proc.pid)
            raise ValueError(f"detnas tracking serve: mlflow server did not start: "
                             f"{_last_line(log)} (log: {log})")
        time.sleep(0.5)
    status = _request(f"{url}/api/2.0/mlflow/experiments/search?max_results=1",
                      (state["username"], state["password"]))
    if status != 200:
        _kill(proc.pid)
        raise ValueError(f"detnas tracking serve: the server refused its owner's credentials "
                         f"(HTTP {status}; {root / STATE} and {root / 'pg'} are from different "
                         "servers?)")


def _group_alive(pgid: int) -> bool:
    """Whether a process of the process group ``pgid`` is left (its leader reaped where it is
    this process's child: a zombie still counts)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _kill(pid: int, timeout: float = 30) -> None:
    """Stop the ``mlflow server`` process group ``pid`` (its uvicorn workers: the port is free
    after it): SIGTERM, SIGKILL after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while _group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _group_alive(pid):
            return


def stop(results: str | Path) -> bool:
    """Stop the tracking server of ``results`` (``mlflow server``, then PostgreSQL, which keeps
    its records for the next `serve`); returns whether one was running."""
    root = folder(results).resolve()
    path = root / STATE
    if not path.exists():
        return False
    state = load_json(path)
    was = bool(state.get("running"))
    if _alive(state.get("pid")):
        _kill(state["pid"])
    data = root / "pg" / "data"
    if (data / "postmaster.pid").exists():
        user = _pg_user()
        _run([_pg_bin() / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], user, root / "pg",
             "pg_ctl stop", ok="Is server running?")
    state["running"] = False
    save_json(path, state, 0o600)
    return was
