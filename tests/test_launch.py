"""`rsbench launch` keeps its ranks on a short leash: killing or interrupting the launcher (its process
group, as a scheduler does) stops every rank, and a failed rank, a failed or stuck rendezvous or a rank's
validation error is one line on stderr, never tracebacks or a hang. The launcher and its ranks are real
processes here (2 CPU ranks, gloo); the tests find the ranks in /proc (Linux)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes in /proc (Linux)")

WAIT = 180  # seconds: generous, the machine may be busy; no test waits this long when it passes


def environment(data: Path, db: Path) -> dict[str, str]:
    env = {**os.environ, "RSBENCH_DATA": str(data), "RSBENCH_DB": str(db)}
    env.pop("RSBENCH_DEBUG", None)
    return env


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def assert_one_line(result: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    lines = stderr_lines(result.stderr)
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("rsbench:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def launch(*args: str, data: Path, db: Path, timeout: int = WAIT) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "rsbench", "launch", "--nproc-per-node", "2", *args]
    return subprocess.run(command, capture_output=True, text=True, env=environment(data, db), timeout=timeout)


def children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != "Z" and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_until(condition, what: str, seconds: float = WAIT) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting until {what}")


LONG_JOBS = {  # each would run for many minutes
    "certify": ["certify", "CHECKPOINT", "--n", "100000", "--batch", "1000", "--no-progress"],
    "train": ["train", "--dataset", "mnist", "--sigma", "0.5", "--epochs", "500", "--batch", "64", "--no-progress"],
}


@pytest.fixture
def long_certification(toy_checkpoint, toy_mnist_root, tmp_path) -> Iterator[tuple[subprocess.Popen, list[int]]]:
    yield from long_job("certify", toy_checkpoint, toy_mnist_root, tmp_path)


@pytest.fixture(params=LONG_JOBS)
def any_long_job(request, toy_checkpoint, toy_mnist_root, tmp_path) -> Iterator[tuple[subprocess.Popen, list[int]]]:
    yield from long_job(request.param, toy_checkpoint, toy_mnist_root, tmp_path)


def long_job(name: str, checkpoint: Path, data: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, list[int]]]:
    """A 2-rank `rsbench launch` of a long job, in a process group of its own (as a scheduler starts a job),
    once both ranks have started and work: (launcher, rank pids). Leftover processes are killed."""
    args = [str(checkpoint) if arg == "CHECKPOINT" else arg for arg in LONG_JOBS[name]]
    if name == "train":
        args += ["--out", str(tmp_path / "run")]
    command = [sys.executable, "-m", "rsbench", "launch", "--nproc-per-node", "2", *args]
    launcher = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(data, tmp_path / "s.db"),
        start_new_session=True,
    )
    ranks: list[int] = []
    try:
        wait_until(lambda: len(children(launcher.pid)) == 2 or launcher.poll() is not None, "both ranks started")
        ranks = children(launcher.pid)
        assert len(ranks) == 2, launcher.communicate()[1]
        working = tmp_path / ("s.db" if name == "certify" else "run/log.tsv")
        wait_until(working.exists, "the ranks work")  # past startup and validation
        yield launcher, ranks
    finally:
        for pid in [launcher.pid, *ranks]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        launcher.communicate()


def test_killing_the_launchers_process_group_stops_its_ranks(long_certification):
    """A scheduler's SIGKILL of the job's process group reaches only the launcher (torchrun starts each rank
    in a session of its own): the ranks notice that their launcher died and stop."""
    launcher, ranks = long_certification
    os.killpg(launcher.pid, signal.SIGKILL)
    wait_until(lambda: not any(alive(pid) for pid in ranks), "the ranks of a killed launcher stopped", 60)


@pytest.mark.parametrize(("sent", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_or_ctrl_c_of_the_group_is_one_line_and_stops_the_ranks(long_certification, sent, code):
    launcher, ranks = long_certification
    os.killpg(launcher.pid, sent)
    _, stderr = launcher.communicate(timeout=WAIT)
    assert_one_line(
        subprocess.CompletedProcess([], launcher.returncode, "", stderr), code, f"interrupted ({sent.name})"
    )
    wait_until(lambda: not any(alive(pid) for pid in ranks), "the ranks stopped", 60)


def test_a_killed_rank_is_one_line(any_long_job):
    """A rank killed from outside (the kernel's OOM killer, say): its peers, which lose contact with it (in
    training at once), are stopped, and one line says which rank was killed."""
    launcher, ranks = any_long_job
    os.kill(ranks[1], signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=WAIT)
    assert_one_line(subprocess.CompletedProcess([], launcher.returncode, "", stderr), 2, "was killed by SIGKILL")
    wait_until(lambda: not any(alive(pid) for pid in ranks), "the other rank stopped", 60)


@pytest.fixture
def foreign_server() -> Iterator[int]:
    """A program on a free port that accepts connections and never answers (not a rendezvous)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for connection in [*accepted, server]:
        connection.close()


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another program has bound (and does not listen on)."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    yield holder.getsockname()[1]
    holder.close()


@pytest.mark.parametrize("port_fixture", ["foreign_server", "held_port"])
def test_a_rendezvous_port_another_program_holds_is_one_line_after_the_timeout(
    port_fixture, request, toy_checkpoint, toy_mnist_root, tmp_path
):
    port = request.getfixturevalue(port_fixture)
    result = launch(
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--timeout",
        "10",
        "certify",
        str(toy_checkpoint),
        "--n",
        "100",
        "--limit",
        "2",
        data=toy_mnist_root,
        db=tmp_path / "s.db",
    )
    assert_one_line(result, 2, f"the rendezvous at 127.0.0.1:{port}", "--timeout")
    assert not (tmp_path / "s.db").exists()


def test_two_launches_at_once_do_not_collide(toy_checkpoint, toy_mnist_root, tmp_path):
    """Without --rdzv-endpoint each launch takes a free port (torchrun's fixed 29500 made the second fail)."""
    command = [sys.executable, "-m", "rsbench", "launch", "--nproc-per-node", "2", "certify", str(toy_checkpoint)]
    command += ["--n", "100", "--limit", "4", "--no-progress"]
    runs = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(toy_mnist_root, db)
        )
        for db in (tmp_path / "a.db", tmp_path / "b.db")
    ]
    for run in runs:
        stdout, stderr = run.communicate(timeout=WAIT)
        assert run.returncode == 0 and stdout.strip() == "1", stderr


VALIDATION_ERRORS = [
    (["train", "--dataset", "mnist", "--sigma", "0.5", "--epochs", "1", "--lam", "3"], "has no hyperparameter 'lam'"),
    (["certify", "CHECKPOINT", "--n", "5"], "CERTIFY can never certify"),
    (["certify", "CHECKPOINT", "--n", "100", "--indices", "99999"], "are outside the split"),
    (["certify", "missing.pth.tar"], "does not exist"),
    (["predict", "CHECKPOINT", "--n", "100", "--certifier", "nosuch"], "unknown certifier 'nosuch'"),
]


@pytest.mark.parametrize(("args", "fragment"), VALIDATION_ERRORS)
def test_a_validation_error_of_the_ranks_is_one_line(args, fragment, toy_checkpoint, toy_mnist_root, tmp_path):
    """Every rank refuses the same input (rank 0's refusal is every rank's, before any rank waits for it):
    one line, from the launcher, and no store."""
    args = [str(toy_checkpoint) if arg == "CHECKPOINT" else arg for arg in args]
    if args[0] == "train":
        args += ["--out", str(tmp_path / "run")]
    result = launch(*args, data=toy_mnist_root, db=tmp_path / "s.db")
    assert_one_line(result, 2, fragment)
    assert "Traceback" not in result.stderr and not (tmp_path / "s.db").exists()


def test_launch_usage_errors_are_one_line(tmp_path):
    for args, fragment in (
        (["--nnodes", "2", "certify", "x.pth.tar"], "needs --rdzv-endpoint"),
        (["--timeout", "0", "certify", "x.pth.tar"], "--timeout must be a positive number"),
        (["download", "mnist"], "launch runs train, certify or predict"),
    ):
        assert_one_line(launch(*args, data=tmp_path, db=tmp_path / "s.db"), 2, fragment)
