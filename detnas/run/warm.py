"""Warm starts: one server process imports torch, torchvision, MLflow and detnas once, and each
``detnas`` command of a local Snakemake run is a fork of it (the process model:
`detnas.run.launch`).

On the embedded default a stage's own work takes 10 to 100 s of CPU, and importing what it needs
took 5 to 7 more in every one of the study's 46 jobs (torch and torchvision about 4, MLflow and its
SQL store about 3): a sixth of the study's job time. A fork of a process that has them imported
starts at once (`benchmarks/bench_warm.py`: a job of two training steps, 5.5 s fresh, 0.34 s
forked).

How: Snakemake's ``onstart`` handler `start`s a server for a local run
(workflow/rules/common.smk) and sets `ADDRESS_VARIABLE` in the jobs' environment. ``detnas``
(`detnas.cli.main`) then hands its command to the server (`run`): a fork takes the command's
stdin, stdout and stderr (passed over the socket), working directory, environment and arguments,
and the command's exit status comes back to ``detnas``, which exits with it. A signal ``detnas``
gets (Snakemake cancelling the job, Ctrl-C) is passed on to the fork; a ``detnas`` killed
outright closes the socket, and the fork ends too. The server ends with the Snakemake process
that started it.

Each command is still its own process, and nothing computes before the fork: the CPU ISA pin
(`detnas.provenance.pin_cpu_isa`) and the job's ``OMP_NUM_THREADS`` apply in the fork as in a
fresh process, CUDA is initialised in the fork only, and the outputs are bit-identical to a cold
start's (tests/test_warm.py). Where no server answers, or it runs another Python or another
detnas checkout, the command runs in its own process as before: cluster jobs, commands by hand.
Code edited while a study runs takes effect at the next Snakemake invocation.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

ADDRESS_VARIABLE = "DETNAS_WARM"
"""The server's address (a Linux abstract socket name) in a job's environment; ``off`` there
keeps Snakemake from starting one."""

PRELOAD = ("torch", "torchvision.models.detection", "mlflow.tracking",
           "mlflow.store.tracking.sqlalchemy_store", "detnas.cli", "detnas.run.train",
           "detnas.search.stage", "detnas.nats.search", "detnas.run.tracking", "detnas.report")
"""What the server imports once (every command imports a part of it)."""

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)

_in_fork = False  # this process runs a command for a client (`_fork`)


def available() -> bool:
    """Whether this platform can serve (abstract Unix sockets and fd passing: Linux)."""
    return sys.platform == "linux"


def _sockaddr(address: str) -> str:
    return "\0" + address  # the abstract namespace: no file, gone with the server


def _key() -> list[str]:
    """What must match between a client and the server: the interpreter and the detnas code."""
    import detnas

    return [sys.executable, os.path.dirname(os.path.abspath(detnas.__file__))]


def start(log: str | Path, parent: int,
          detnas: Sequence[str] = ("detnas",)) -> tuple[str, subprocess.Popen] | None:
    """Start a server for the process ``parent`` (Snakemake's onstart handler: its own pid) by
    ``detnas warm serve`` (``detnas``: the command the jobs run), its output in ``log``.

    Returns:
        Its address, once it listens (a command started before that would run cold), for the
        jobs' `ADDRESS_VARIABLE`, and its process; None where none can start (not Linux,
        ``detnas`` not found, the server failing within 30 s): the jobs then run as fresh
        processes.
    """
    if not available() or shutil.which(detnas[0]) is None:
        return None
    address = f"detnas-warm-{parent}-{uuid.uuid4().hex[:8]}"
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        server = subprocess.Popen([*detnas, "warm", "serve", address, "--parent", str(parent)],
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    deadline = time.monotonic() + 30
    while "listening" not in Path(log).read_text():
        if server.poll() is not None or time.monotonic() > deadline:
            return None
        time.sleep(0.02)
    return address, server


def preload() -> None:
    """Import `PRELOAD`, and nothing more: no thread pool starts and CUDA stays uninitialised
    (a fork inherits neither a pool's threads nor a CUDA context; tests/test_warm.py)."""
    for name in PRELOAD:
        importlib.import_module(name)


def serve(address: str, parent: int, command: Callable[[list[str]], int]) -> None:
    """Serve ``address`` until the process ``parent`` (Snakemake) ends: each request runs
    ``command(argv)`` (`detnas.cli.main`) in a fork.

    The socket is bound before the imports: a job that starts meanwhile waits in the backlog
    instead of importing on its own.
    """
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(_sockaddr(address))
    server.listen(128)
    print(f"detnas warm: listening on {address} for process {parent}", flush=True)
    preload()
    key = _key()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the forks
    server.settimeout(1.0)
    print("detnas warm: serving (torch, torchvision, MLflow and detnas imported)", flush=True)
    while os.getppid() == parent:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        with conn:
            uid = _peer_uid(conn)
            if uid != os.getuid():  # before reading a byte: another user's request runs nothing
                print(f"detnas warm: refused a client of uid {uid} (it serves uid "
                      f"{os.getuid()} only)", flush=True)
                continue
            if os.fork() == 0:
                server.close()
                _fork(conn, key, command)  # never returns
    print("detnas warm: Snakemake ended; stopping", flush=True)


def replace_process(cmd: Sequence[str]) -> int:
    """``detnas launch``'s way to run ``cmd`` (torchrun or srun; `detnas.run.launch.run`): replace
    this process (``exec``, so that signals reach it). In a fork, whose exit status goes back over
    a socket an ``exec`` would close, run ``cmd`` as a child instead, pass the forwarded signals
    on, and return its exit status."""
    if not _in_fork:
        os.execvp(cmd[0], cmd)
    child = subprocess.Popen(cmd)
    for sig in FORWARDED:
        signal.signal(sig, lambda sig, _frame: child.send_signal(sig))
    code = child.wait()
    return code if code >= 0 else 128 - code


def _peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of ``conn`` (the kernel's SO_PEERCRED: an
    abstract socket has no file permissions, and any local user can connect to it)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    """The request (8-byte length, JSON) and the three file descriptors sent with it."""
    head, fds, _, _ = socket.recv_fds(conn, 8, 3)
    while len(head) < 8:
        more = conn.recv(8 - len(head))
        if not more:
            raise ConnectionError("the client left before its request")
        head += more
    size, body = int.from_bytes(head, "big"), b""
    while len(body) < size:
        more = conn.recv(size - len(body))
        if not more:
            raise ConnectionError("the client left before its request")
        body += more
    return json.loads(body), fds


def _end_with(conn: socket.socket) -> None:
    """End this fork when its client goes (killed outright: nothing else would tell it)."""
    with contextlib.suppress(OSError):
        conn.recv(1)
    os.kill(os.getpid(), signal.SIGTERM)


def _fork(conn: socket.socket, key: list[str], command: Callable[[list[str]], int]) -> None:
    """Run one command in this fork, as a fresh ``detnas`` process would, and report its exit
    status to the client."""
    global _in_fork
    _in_fork = True
    code = 1
    try:
        conn.setblocking(True)
        request, fds = _receive(conn)
        if request["key"] != key or len(fds) != 3:
            conn.sendall(b"refused\n")  # the client runs the command itself
            os._exit(0)
        conn.sendall(f"{os.getpid()}\n".encode())
        print(f"detnas warm: fork {os.getpid()} runs detnas {' '.join(request['argv'])}",
              flush=True)  # in the server's log
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        threads = os.environ.get("OMP_NUM_THREADS", "")
        if threads.isdigit() and int(threads) > 0:  # read by torch at import: the server's
            import torch

            torch.set_num_threads(int(threads))
        threading.Thread(target=_end_with, args=(conn,), daemon=True).start()
        with contextlib.suppress(OSError):  # `top` and `ps -o comm` name the command
            Path("/proc/self/comm").write_text(f"detnas {request['argv'][0]}"[:15])
        sys.argv = ["detnas", *request["argv"]]
        logging.getLogger().handlers.clear()  # the server's: the command sets up its own (-v)
        code = command(request["argv"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        with contextlib.suppress(OSError):
            conn.sendall(f"{code}\n".encode())
        os._exit(code)


def run(argv: list[str]) -> int | None:
    """Run ``detnas argv`` in a fork of the server `ADDRESS_VARIABLE` names, and return its exit
    status; None where there is no server to run it (none set or answering, another Python or
    detnas checkout, a standard stream that cannot be passed): the caller runs it itself."""
    address = os.environ.get(ADDRESS_VARIABLE, "")
    if address in ("", "off") or not available() or argv[:1] == ["warm"]:
        return None
    request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                          "key": _key()}).encode()
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(_sockaddr(address))
        socket.send_fds(conn, [len(request).to_bytes(8, "big") + request], [0, 1, 2])
        reply = conn.makefile("rb")
        first = reply.readline().strip()
    except OSError:
        return None
    if not first.isdigit():
        return None  # refused, or the server ended before the command started
    pid, forwarded = int(first), []

    def forward(sig, _frame):
        forwarded.append(sig)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    last = reply.readline().strip()
    if last.lstrip(b"-").isdigit():
        return int(last)
    if forwarded:
        return 128 + forwarded[-1]
    print(f"detnas: the warm process {pid} ended without an exit status (killed?)",
          file=sys.stderr)
    return 1
