"""Warm starts (`detnas.run.warm`): a command run in a fork of the server behaves as a fresh
process,
bit for bit, and a job cancelled or killed takes its fork with it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from detnas.run import warm

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not warm.available(), reason="warm starts need Linux")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A warm server of this test process: its address and its log."""
    log = tmp_path_factory.mktemp("warm") / "warm.log"
    started = warm.start(log, os.getpid(), (sys.executable, "-m", "detnas"))
    assert started is not None, log.read_text()
    address, proc = started
    deadline = time.monotonic() + 120
    while "serving" not in log.read_text():  # its imports done
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    yield address, log
    proc.terminate()
    proc.wait()


def _detnas(args, env, cwd=None, **kw):
    return subprocess.run([sys.executable, "-m", "detnas", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300, **kw)


def _forks(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if " runs " in line]


def test_a_command_runs_in_a_fork_with_its_streams_directory_and_exit_status(server, tmp_path):
    address, log = server
    cold_env = {**os.environ, "OMP_NUM_THREADS": "1"}
    warm_env = {**cold_env, warm.ADDRESS_VARIABLE: address}
    for args in (["arch", "show", "00-00-0000-00", "--space", "tiny"],  # stdout, status 0
                 ["arch", "show", "no-such-arch"],  # one line on stderr, status 2
                 ["arch", "spec", "shufflenetv2", "--set", "space=tiny", "--out", "a.json"]):
        (tmp_path / "cold").mkdir(exist_ok=True)
        (tmp_path / "warm").mkdir(exist_ok=True)
        before = len(_forks(log))
        cold = _detnas(args, cold_env, cwd=tmp_path / "cold")
        hot = _detnas(args, warm_env, cwd=tmp_path / "warm")
        assert len(_forks(log)) == before + 1, log.read_text()  # it ran in the server
        assert (hot.returncode, hot.stdout, hot.stderr) == (cold.returncode, cold.stdout,
                                                            cold.stderr), args
    spec = "a.json"
    assert (tmp_path / "warm" / spec).read_bytes() == (tmp_path / "cold" / spec).read_bytes()


def test_a_fork_honours_verbose(server, tmp_path):
    address, log = server
    env = {**os.environ, "OMP_NUM_THREADS": "1", warm.ADDRESS_VARIABLE: address}
    before = len(_forks(log))
    hot = _detnas(["-v", "arch", "show", "00-00-0000-00", "--space", "tiny"], env, cwd=tmp_path)
    assert len(_forks(log)) == before + 1 and hot.returncode == 0
    assert "DEBUG detnas.cli: detnas -v arch show" in hot.stderr, hot.stderr


def test_a_training_in_a_fork_is_bit_identical_to_a_fresh_process(server, tmp_path,
                                                                  classification_study):
    """The same stage cold and warm (through ``detnas launch``, which runs it in its own process:
    the fork): the same weights and metrics, the CPU ISA pin and the thread count applied in the
    fork as in a fresh process (the server imported torch before either was known)."""
    address, log = server
    cfg_path, env = classification_study(num_train=24, steps=6)
    args = ["train", "supernet", "--task", "classification", "--config", str(cfg_path)]
    cold = _detnas([*args, "--out", str(tmp_path / "cold")], env)
    hot = _detnas(["launch", "--gpus", "0", "--", *args, "--out", str(tmp_path / "warm")],
                  {**env, warm.ADDRESS_VARIABLE: address})  # as the Snakefile runs it
    assert cold.returncode == hot.returncode == 0, hot.stderr[-2000:]
    assert [line for line in _forks(log) if "train supernet" in line][-1].split(" runs ")[1] \
        == "detnas launch --gpus 0 -- " + " ".join([*args, "--out", str(tmp_path / "warm")])
    a = torch.load(tmp_path / "cold" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "warm" / "checkpoint.pt", weights_only=True)
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=0, atol=0, msg=k)

    def numbers(folder):
        metrics = json.loads((tmp_path / folder / "metrics.json").read_text())
        metrics.pop("cost")  # times
        return metrics

    assert numbers("warm") == numbers("cold")
    environment = numbers("warm")["provenance"]["numeric_environment"]
    assert environment["threads"] == 1
    if "avx2" in Path("/proc/cpuinfo").read_text():
        assert environment["cpu_capability"] == "AVX2"  # pinned after the server's imports


def test_without_a_server_or_with_another_checkout_the_command_runs_here(server, tmp_path):
    address, log = server
    env = {**os.environ, warm.ADDRESS_VARIABLE: "detnas-test-nobody-serves-this"}
    args = ["arch", "show", "00-00-0000-00", "--space", "tiny"]
    cold = _detnas(args, {**os.environ})
    assert _detnas(args, env).stdout == cold.stdout
    before = len(_forks(log))
    env[warm.ADDRESS_VARIABLE] = address
    assert _detnas(args, env, stdin=subprocess.DEVNULL).stdout == cold.stdout
    assert len(_forks(log)) == before + 1
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:  # another detnas checkout
        conn.connect("\0" + address)
        request = json.dumps({"argv": args, "cwd": str(tmp_path), "env": {},
                              "key": [sys.executable, "/elsewhere/detnas"]}).encode()
        socket.send_fds(conn, [len(request).to_bytes(8, "big") + request], [0, 1, 2])
        assert conn.makefile("rb").readline() == b"refused\n"
    assert len(_forks(log)) == before + 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_cancelled_or_killed_job_ends_its_fork(server, tmp_path, classification_study, sig):
    """Snakemake cancels a job with a signal to its ``detnas``: passed on to the fork. A
    ``detnas`` killed outright cannot pass anything on: its fork sees the socket close."""
    address, log = server
    cfg_path, env = classification_study(num_train=48, steps=100000)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "detnas", "train", "supernet", "--task",
                             "classification", "--config", str(cfg_path), "--out", str(out)],
                            env={**env, warm.ADDRESS_VARIABLE: address},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "resume.pt").exists():  # training, in the fork
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    (fork,) = [int(line.split()[3]) for line in _forks(log) if str(out) in line]
    os.kill(proc.pid, sig)
    assert proc.wait(timeout=30) == (128 + sig if sig == signal.SIGTERM else -sig)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{fork}").exists() and "zombie" not in _state(fork):
        assert time.monotonic() < deadline, f"fork {fork} still runs after its job got {sig}"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]
    except (OSError, IndexError):
        return "zombie"


def test_torchrun_ranks_run_in_forks_with_the_bits_of_fresh_ranks(server, tmp_path,
                                                                  classification_study):
    """``detnas launch --gpus 2`` in a fork execs torchrun; its two ranks (``python -m
    detnas``) are forks too, each with its rank's environment: the same weights as the cold
    2-process run, and the ranks still checked identical."""
    address, log = server
    cfg_path, env = classification_study(num_train=24, steps=3)
    runs = {}
    for name, job_env in (("cold", env), ("warm", {**env, warm.ADDRESS_VARIABLE: address})):
        runs[name] = _detnas(["launch", "--gpus", "2", "--", "train", "supernet", "--task",
                              "classification", "--config", str(cfg_path), "--out",
                              str(tmp_path / name)], job_env)
        assert runs[name].returncode == 0, runs[name].stderr[-3000:]
        assert "weights identical on the 2 ranks" in runs[name].stderr
    ranks = [line for line in _forks(log) if line.endswith(f"--out {tmp_path / 'warm'}")]
    assert len(ranks) == 3, ranks  # detnas launch, then rank 0 and rank 1
    a = torch.load(tmp_path / "cold" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "warm" / "checkpoint.pt", weights_only=True)
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=0, atol=0, msg=k)


@pytest.mark.skipif(os.getuid() != 0, reason="becoming another uid needs root (CI runs as root)")
def test_another_user_gets_nothing_run(server, tmp_path):
    """An abstract socket has no permissions and its name is in /proc/net/unix: a local user
    who sends the study's key and a planted command must get nothing run as the owner, and the
    server logs the refusal (peer credentials, checked before the request is read)."""
    address, log = server
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o777)
    script = f"""
import json, os, socket, sys
os.setgid(65534); os.setuid(65534)  # nobody
request = json.dumps({{"argv": ["arch", "spec", "shufflenetv2", "--set", "space=tiny",
                                "--out", "{planted}/owned.json"], "cwd": "{planted}",
                       "env": dict(os.environ), "key": {json.dumps(warm._key())}}}).encode()
conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
conn.connect("\\0{address}")
try:  # the server may have closed the connection already
    socket.send_fds(conn, [len(request).to_bytes(8, "big") + request], [0, 1, 2])
    print(repr(conn.recv(100)))
except OSError:
    print(repr(b""))
"""
    before = len(_forks(log))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "b''"  # the connection closed, nothing answered
    time.sleep(1.0)
    assert not (planted / "owned.json").exists()
    assert len(_forks(log)) == before  # nothing forked
    assert "refused a client of uid 65534" in log.read_text()


def test_the_server_starts_no_thread_and_no_cuda_before_the_fork():
    """What a fork inherits: the imports, and neither torch's thread pools (their threads are
    lost in a fork: a parallel op would wait on them) nor a CUDA context (unusable in a fork).
    Counted: the threads of the process but jemalloc's background thread (pyarrow's allocator,
    through MLflow, which handles forks itself), with numpy's OpenBLAS at one thread; then, as a
    check of the count, after a parallel op has started torch's pool."""
    probe = ("import os, torch\nfrom detnas.run import warm\nwarm.preload()\n"
             "def threads():\n"
             "    return sum(open(f'/proc/self/task/{t}/comm').read().strip() != 'jemalloc_bg_thd'"
             " for t in os.listdir('/proc/self/task'))\n"
             "print(threads(), torch.cuda.is_initialized())\n"
             "x = torch.randn(1000, 1000)\nx @ x\nprint(threads())")
    env = {**os.environ, "OMP_NUM_THREADS": "4", "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out[:2] == ["1", "False"]  # the main thread alone, no CUDA context
    assert int(out[2]) > 1  # a started pool would have shown
