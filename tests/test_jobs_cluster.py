"""jobs/run.py as an operator runs it, up to `ray job submit` to a real two-node Ray cluster.

First the job's exit statuses, without a cluster (bad input, failure,
interruption). Then, marked ``cluster``, the real thing: two
`ray start --block` processes on this machine (a head and a worker, each
with its own temp dir and one CPU), with Ray's token authentication switched
on explicitly and a token made for this cluster alone; the dashboard, where
jobs are submitted, listens on 127.0.0.1 only. The job is submitted from the
repository root with jobs/runtime_env.preinstalled.yaml, as on a cluster
whose image already has crossemo's dependencies, and runs the study on the
synthetic demo corpora.

The cluster is stopped by its own processes: the two `ray start` processes,
everything they started, and anything else whose command line names this
cluster's temp dir; SIGTERM first, SIGKILL after a grace period. `ray stop`
is never used: it stops every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psutil
import pytest

from crossemo import orchestration, pipeline
from crossemo.synthetic import make_demo_corpora

from jobscript import load_job_script

REPO = Path(__file__).resolve().parents[1]
# The Python (and its `ray`) that runs these tests also runs the cluster and
# the job's driver: /work/venv in development, .venv in CI.
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
START_TIMEOUT = 120
JOB_TIMEOUT = 300
GRACE_SECONDS = 15


JOB = load_job_script()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, Path]:
    return make_demo_corpora(tmp_path_factory.mktemp("demo"), speakers=2, per_emotion=2)


# --- the job's exit statuses, without a cluster --------------------------------------------------


def _run_job(*args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    return subprocess.run([sys.executable, "jobs/run.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


BAD_INPUT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ERROR crossemo-job: bad input: ")


@pytest.mark.parametrize("args, message", [
    (["--out", "OUT", "--trees", "5"], "unrecognized arguments: --trees"),
    (["--corpus", "nosuch=/tmp", "--corpus", "manifest={studio}", "--out", "OUT"], "unknown corpus recipe 'nosuch'"),
    (["--corpus", "manifest={studio}", "--corpus", "manifest={phone}", "--out", "OUT", "--pairs", "synth_studio:nosuch"], "names corpus 'nosuch'"),
    (["--corpus", "manifest={studio}", "--out", "OUT"], "need at least two corpora"),
    (["--config", "/does/not/exist.toml"], "config file /does/not/exist.toml does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, demo, tmp_path, monkeypatch, capsys):
    def no_ray(*args, **kwargs):
        raise AssertionError("bad input must be found before the driver joins Ray")

    monkeypatch.setattr(orchestration, "connect", no_ray)
    args = [arg.format(studio=demo["synth_studio"], phone=demo["synth_phone"]).replace("OUT", str(tmp_path / "out")) for arg in args]
    status = JOB.main(args)
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and BAD_INPUT_LINE.match(lines[0]), err
    assert not (tmp_path / "out").exists()


def test_the_script_is_the_job_entrypoint(demo, tmp_path):
    """`python jobs/run.py` as Ray runs it: exit statuses reach the shell, help is `crossemo run`'s."""
    result = _run_job("--corpus", "nosuch=/tmp", "--corpus", f"manifest={demo['synth_studio']}", "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown corpus recipe 'nosuch'" in lines[0] and BAD_INPUT_LINE.match(lines[0]), result.stderr
    assert re.search(r"^\S+Z INFO crossemo-job: start: out ", result.stdout, re.M), result.stdout
    result = _run_job("--help")
    assert result.returncode == 0 and "--corpus NAME=URI" in result.stdout and "--config" in result.stdout


def test_an_output_in_rays_copy_of_the_working_directory_is_refused(demo, tmp_path, monkeypatch, capsys):
    """Submitted with a working_dir, a job runs in Ray's copy of it, under the session's runtime_resources, which Ray deletes with the session.

    A relative --out (or a config's relative out), or one beside the copy, is
    refused there rather than lost; an entrypoint that changed folder first is not in the copy.
    """
    resources = tmp_path / "session" / "runtime_resources"
    copy = resources / "working_dir_files" / "_ray_pkg_0123"
    shutil.copytree(REPO / "jobs", copy / "jobs")  # what travels, as Ray unpacks it
    monkeypatch.chdir(copy)
    monkeypatch.setattr(JOB, "_CHECKOUT", copy)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip"}}))
    monkeypatch.setattr(orchestration, "connect", lambda *args, **kwargs: pytest.fail("bad input must be found before the driver joins Ray"))
    corpora = ["--corpus", f"manifest={demo['synth_studio']}", "--corpus", f"manifest={demo['synth_phone']}"]
    (copy / "run.toml").write_text('out = "results"\n')
    for args, named in ((["--out", "results"], "--out results"), (["--config", "run.toml"], f"--out {copy / 'results'}"), (["--out", "../../beside"], "--out ../../beside")):
        assert JOB.main([*corpora, *args]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert BAD_INPUT_LINE.match(line) and f"{named} lies in Ray's temporary copy of this job's working directory ({resources})" in line, line
    assert not (copy / "results").exists() and not (resources / "beside").exists()
    result = subprocess.run(
        [sys.executable, "jobs/predict.py", "--model", "model", "--audio", str(demo["synth_phone"]), "--out", str(tmp_path / "labels"), "--store", "store"],
        cwd=copy, env=dict(os.environ), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "--store store lies in Ray's temporary copy" in result.stderr, result.stderr
    # An entrypoint that went elsewhere first writes its relative paths there; outside a job, relative is the caller's folder.
    monkeypatch.chdir(tmp_path)
    assert JOB.working_copy() is None
    monkeypatch.chdir(copy)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR")
    assert JOB.working_copy() is None


def test_unexpected_failure_is_exit_1_with_a_traceback(demo, tmp_path, monkeypatch, capsys):
    def broken(config, *, evaluate):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pipeline, "run", broken)
    status = JOB.main(["--corpus", f"manifest={demo['synth_studio']}", "--corpus", f"manifest={demo['synth_phone']}", "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert status == 1
    assert "crossemo-job: start: out" in captured.out
    assert "ERROR crossemo-job: failed after" in captured.err
    assert "Traceback (most recent call last)" in captured.err and "RuntimeError: disk on fire" in captured.err


def test_sigterm_is_exit_130(demo, tmp_path, monkeypatch, capsys):
    """`ray job stop` sends SIGTERM: the job says so and ends with 130, also once it joined Ray."""
    def fake_init(**kwargs):
        # As ray.init() does: a SIGTERM handler of its own, which exits with 1 and no word.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))

    def stopped(config, *, evaluate):
        orchestration.connect(config.address)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        raise AssertionError("SIGTERM did not stop the run")

    monkeypatch.setattr(orchestration.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(orchestration.ray, "init", fake_init)
    monkeypatch.setattr(orchestration.ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(pipeline, "run", stopped)
    before = signal.getsignal(signal.SIGTERM)
    status = JOB.main(["--corpus", f"manifest={demo['synth_studio']}", "--corpus", f"manifest={demo['synth_phone']}", "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert status == 130
    assert "interrupted by SIGTERM" in captured.err and str(tmp_path / "out") in captured.err
    assert signal.getsignal(signal.SIGTERM) is before


# --- on a real two-node cluster -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"({path} unreadable: {error})"


@dataclass
class Cluster:
    root: Path
    dashboard: str
    gcs: str
    env: dict[str, str]
    head: subprocess.Popen
    worker: subprocess.Popen

    def ray(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        """Run the `ray` CLI against this cluster, with its token."""
        result = subprocess.run([RAY, *args], env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"ray {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def submit(self, *args: str, wait: float = 90) -> subprocess.CompletedProcess:
        """`ray job submit ARGS`, retried while the head's job agent is still starting.

        Two alive nodes do not mean the dashboard agent that takes jobs is up:
        until it is, Ray answers "No available agent to submit job, please try
        again later" and creates no job, so asking again is safe.
        """
        deadline = time.monotonic() + wait
        while True:
            result = self.ray("job", "submit", *args, check=False)
            if result.returncode == 0 or "No available agent" not in result.stdout + result.stderr or time.monotonic() > deadline:
                break
            time.sleep(2)
        if result.returncode != 0:
            raise AssertionError(f"ray job submit {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def alive_nodes(self) -> list[dict]:
        result = self.ray("list", "nodes", "--address", self.dashboard, "--format", "json", check=False)
        if result.returncode != 0:
            return []
        return [node for node in json.loads(result.stdout) if node["state"] == "ALIVE"]


def _cluster_env(root: Path) -> dict[str, str]:
    """The environment of every process of the cluster and of every `ray` command talking to it.

    No RAY_* setting of the calling shell leaks in (no RAY_ADDRESS, no
    RAY_AUTH_TOKEN of another cluster). Token authentication is on by
    choice, not by Ray's version-dependent default: RAY_AUTH_MODE=token, and
    RAY_AUTH_TOKEN_PATH names this cluster's token file, which takes
    precedence over ~/.ray/auth_token. The nodes hand the setting on to the
    job's driver and to every worker process.
    """
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        RAY_USAGE_STATS_ENABLED="0",
        # `python` in the job's entrypoint is this Python.
        PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]),
    )
    return env


def _start_node(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "wb") as handle:
        # Its own session: a Ctrl-C in the terminal reaches pytest, whose
        # fixture then stops the cluster in order.
        return subprocess.Popen([RAY, "start", "--block", *args], stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)


def _wait_for(condition, what: str, process: subprocess.Popen, log: Path, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"`ray start` exited with {process.returncode} before {what}:\n{_tail(log)}")
        if condition():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n{_tail(log)}")


def _gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def cluster_processes(starters: list[subprocess.Popen], root: Path) -> dict[int, psutil.Process]:
    """Every live process of this cluster.

    Those are the `ray start` processes and everything they started (GCS,
    raylets, dashboard, agents, workers, the job's driver), plus any process
    whose command line names this cluster's temp dir (one whose parent died
    and which was re-parented). Ray workers rename themselves (`ray::IDLE`),
    so they are found as descendants, not by command line.
    """
    found: dict[int, psutil.Process] = {}

    def add(process: psutil.Process) -> None:
        try:
            found.setdefault(process.pid, process)
            for child in process.children(recursive=True):
                found.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass

    for starter in starters:
        try:
            add(psutil.Process(starter.pid))
        except psutil.NoSuchProcess:
            pass
    marker = str(root)
    for process in psutil.process_iter(["cmdline"]):
        if any(marker in part for part in process.info["cmdline"] or ()):
            add(process)
    found.pop(os.getpid(), None)
    return {pid: process for pid, process in found.items() if not _gone(process)}


def _signal_all(processes, signum: int) -> None:
    for process in processes:
        try:
            process.send_signal(signum)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def _wait_gone(processes, timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    remaining = [p for p in processes if not _gone(p)]
    while remaining and time.monotonic() < deadline:
        time.sleep(0.2)
        remaining = [p for p in remaining if not _gone(p)]
    return remaining


def stop_cluster(cluster_starters: list[subprocess.Popen], root: Path) -> list[str]:
    """Stop this cluster's processes and no other; returns what survived SIGKILL (nothing, normally)."""
    before = cluster_processes(cluster_starters, root)
    # `ray start --block` answers SIGTERM by stopping the processes it started; the worker node first.
    starters = [before[p.pid] for p in cluster_starters if p.pid in before]
    for starter in starters:
        _signal_all([starter], signal.SIGTERM)
        _wait_gone([starter], GRACE_SECONDS)
    # Whatever is left, from the first look or found now (a process re-parented meanwhile).
    left = {**before, **cluster_processes(cluster_starters, root)}
    survivors = _wait_gone(list(left.values()), 1)
    _signal_all(survivors, signal.SIGTERM)
    survivors = _wait_gone(survivors, 5)
    _signal_all(survivors, signal.SIGKILL)
    survivors = _wait_gone(survivors, 5)
    for starter in cluster_starters:
        try:
            starter.wait(timeout=5)
        except subprocess.TimeoutExpired:
            starter.kill()
            starter.wait(timeout=5)
    return [f"{p.pid} {' '.join(p.cmdline())[:120]}" for p in survivors if not _gone(p)]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Cluster]:
    # Short and unique: Ray puts Unix sockets below it (their paths are limited
    # to ~100 characters), and the cluster's processes are found by it.
    root = Path(tempfile.mkdtemp(prefix="crossemo-ray-", dir="/tmp"))
    env = _cluster_env(root)
    gcs, dashboard = _free_port(), _free_port()
    starters: list[subprocess.Popen] = []
    try:
        head_log = root / "head.log"
        head = _start_node(
            [
                "--head", f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                # Two nodes on one machine: every port with a fixed default gets a free one.
                f"--dashboard-agent-listen-port={_free_port()}", f"--ray-client-server-port={_free_port()}",
                "--num-cpus=1", f"--object-store-memory={200 * 1024**2}", f"--temp-dir={root / 'head'}", "--disable-usage-stats",
            ],
            head_log, env,
        )
        starters.append(head)
        _wait_for(lambda: "Ray runtime started" in head_log.read_text(errors="replace"), "the head node to start", head, head_log)

        worker_log = root / "worker.log"
        worker = _start_node(
            [
                f"--address=127.0.0.1:{gcs}", f"--dashboard-agent-listen-port={_free_port()}",
                "--num-cpus=1", f"--object-store-memory={200 * 1024**2}", f"--temp-dir={root / 'worker'}", "--disable-usage-stats",
            ],
            worker_log, env,
        )
        starters.insert(0, worker)
        cluster = Cluster(root=root, dashboard=f"http://127.0.0.1:{dashboard}", gcs=f"127.0.0.1:{gcs}", env=env, head=head, worker=worker)
        _wait_for(lambda: len(cluster.alive_nodes()) == 2, "two alive nodes", worker, worker_log)
        yield cluster
    finally:
        survivors = stop_cluster(starters, root)
        shutil.rmtree(root, ignore_errors=True)
        assert not survivors, f"processes of the test cluster survived SIGKILL: {survivors}"


def _job_status(cluster: Cluster, submission_id: str) -> str:
    """The job's status as `ray job status` reports it (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
    result = cluster.ray("job", "status", "--address", cluster.dashboard, "--log-style", "record", "--log-color", "false", submission_id, check=False)
    text, quoted = result.stdout + result.stderr, re.escape(f"'{submission_id}'")
    for pattern, status in ((rf"Job {quoted} succeeded", "SUCCEEDED"), (rf"Job {quoted} failed", "FAILED"), (rf"Job {quoted} was stopped", "STOPPED")):
        if re.search(pattern, text):
            return status
    match = re.search(rf"Status for job {quoted}: (\w+)", text)
    return match.group(1) if match else "UNKNOWN"


@pytest.mark.cluster
@pytest.mark.timeout(600)
def test_token_is_required(ray_cluster):
    """Without this cluster's token nothing can be asked of it."""
    env = {key: value for key, value in ray_cluster.env.items() if not key.startswith("RAY_AUTH")}
    env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    env["RAY_AUTH_MODE"] = "token"
    result = subprocess.run([RAY, "job", "list", "--address", ray_cluster.dashboard], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "auth" in (result.stdout + result.stderr).lower()


@pytest.mark.cluster
@pytest.mark.timeout(600)
def test_joining_with_a_token_the_cluster_refuses_is_one_line_and_exit_2(ray_cluster, demo, tmp_path):
    """The address answers as a Ray cluster, then refuses the token: this ended in a traceback, exit 1."""
    env = {key: value for key, value in ray_cluster.env.items() if not key.startswith("RAY_AUTH")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    command = [sys.executable, "-m", "crossemo.cli", "features", "--corpus", f"manifest={demo['synth_studio']}", "--out", str(tmp_path / "out"), "--address", ray_cluster.gcs, "--no-progress"]
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    # Ray's own C++ client logs its retries first; crossemo's word is the last line.
    assert result.stderr.strip().splitlines()[-1] == (
        f"crossemo: error: the Ray cluster at '{ray_cluster.gcs}' refused this client's authentication token (or found none): "
        "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token, as its nodes have it"
    )
    assert "Traceback" not in result.stderr


def _finished_job(cluster: Cluster, *entrypoint: str) -> str:
    """Submit a job, wait for it to end, and return its log; it must succeed."""
    status, logs = _ended_job(cluster, *entrypoint)
    assert status == "SUCCEEDED", f"job ended {status}:\n{logs}"
    return logs


def _ended_job(cluster: Cluster, *entrypoint: str) -> tuple[str, str]:
    """Submit a job, wait for it to end (stopping it if it outlives JOB_TIMEOUT), and return its status and log."""
    submission_id = f"crossemo-test-{uuid.uuid4().hex[:8]}"
    cluster.submit("--address", cluster.dashboard, "--submission-id", submission_id, "--runtime-env", "jobs/runtime_env.preinstalled.yaml", "--no-wait", "--", *entrypoint)
    deadline = time.monotonic() + JOB_TIMEOUT
    status = _job_status(cluster, submission_id)
    while status not in ("SUCCEEDED", "FAILED", "STOPPED") and time.monotonic() < deadline:
        time.sleep(3)
        status = _job_status(cluster, submission_id)
    logs = cluster.ray("job", "logs", "--address", cluster.dashboard, submission_id, check=False).stdout
    if status not in ("SUCCEEDED", "FAILED", "STOPPED"):
        cluster.ray("job", "stop", "--address", cluster.dashboard, "--no-wait", submission_id, check=False)
    return status, logs


@pytest.mark.cluster
@pytest.mark.timeout(600)
def test_study_runs_as_a_ray_job_on_two_nodes(ray_cluster, demo, tmp_path):
    manifests = demo
    config = tmp_path / "fast.toml"
    # The study's forests have 1000 trees; 20 are plenty to show the job works.
    config.write_text("[method_params.rf]\nn_estimators = 20\n")
    out = tmp_path / "out"
    logs = _finished_job(
        ray_cluster, "python", "jobs/run.py",
        "--corpus", f"manifest={manifests['synth_studio']}", "--corpus", f"manifest={manifests['synth_phone']}",
        "--config", str(config), "--methods", "rf", "--out", str(out), "--no-progress",
    )

    # The operator's log lines: a start and an end, with timestamps, the run id and the pairs.
    start = re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO crossemo-job: start: out (\S+);.* (\d+) pairs planned", logs, re.M)
    done = re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO crossemo-job: done: run (\S+) in (\S+); (\d+) pairs;", logs, re.M)
    assert start and done, logs
    assert start.group(1) == str(out) and start.group(2) == "2"
    assert done.group(2) == str(out) and done.group(3) == "2"

    # The run record, the feature store and Table 2, with a row per pair.
    run_id = done.group(1)
    record = json.loads((out / "runs" / run_id / "run.json").read_text())
    pairs = {("synth_studio", "synth_phone"), ("synth_phone", "synth_studio")}
    assert {tuple(pair) for pair in record["pairs"]} == pairs
    features = {path.stem: pd.read_parquet(path) for path in (out / "features").glob("*.parquet") if not path.stem.startswith("_")}
    assert set(features) == {"synth_studio", "synth_phone"}
    assert all(len(frame) == 2 * 4 * 2 for frame in features.values())
    table2 = pd.read_csv(out / "report" / "table2.csv")
    assert set(zip(table2["source"], table2["target"])) == pairs and len(table2) == 2
    assert table2[["majority", "scenario1", "scenario2", "scenario3"]].notna().all().all()

    # Both nodes were alive throughout, and both did the job's work.
    nodes = ray_cluster.alive_nodes()
    assert len(nodes) == 2 and sum(node["is_head_node"] for node in nodes) == 1
    tasks = json.loads(ray_cluster.ray("list", "tasks", "--address", ray_cluster.dashboard, "--format", "json", "--limit", "10000", "--detail").stdout)
    crossemo_tasks = [task for task in tasks if task.get("func_or_class_name", "").startswith(("_shard_task", "_run_task")) and task["state"] == "FINISHED"]
    assert crossemo_tasks, "no finished crossemo task listed"
    assert {task["node_id"] for task in crossemo_tasks} == {node["node_id"] for node in nodes}


@pytest.mark.cluster
@pytest.mark.timeout(600)
def test_ray_job_stop_interrupts_the_run(ray_cluster, demo, tmp_path):
    """`ray job stop` ends a running study: SIGTERM, a log line saying so, status STOPPED."""
    submission_id = f"crossemo-stop-{uuid.uuid4().hex[:8]}"
    ray_cluster.submit(
        "--address", ray_cluster.dashboard, "--submission-id", submission_id,
        "--runtime-env", "jobs/runtime_env.preinstalled.yaml", "--no-wait", "--",
        # The study's full-size methods: far longer than this test waits.
        "python", "jobs/run.py", "--corpus", f"manifest={demo['synth_studio']}", "--corpus", f"manifest={demo['synth_phone']}",
        "--out", str(tmp_path / "out"), "--no-progress",
    )
    deadline = time.monotonic() + 120
    logs = ""
    while "crossemo-job: start:" not in logs and time.monotonic() < deadline:
        time.sleep(2)
        logs = ray_cluster.ray("job", "logs", "--address", ray_cluster.dashboard, submission_id, check=False).stdout
    assert "crossemo-job: start:" in logs, logs
    ray_cluster.ray("job", "stop", "--address", ray_cluster.dashboard, submission_id, timeout=120)
    status = _job_status(ray_cluster, submission_id)
    deadline = time.monotonic() + 60
    while status != "STOPPED" and time.monotonic() < deadline:
        time.sleep(2)
        status = _job_status(ray_cluster, submission_id)
    logs = ray_cluster.ray("job", "logs", "--address", ray_cluster.dashboard, submission_id, check=False).stdout
    assert status == "STOPPED", logs
    assert re.search(r"Z ERROR crossemo-job: interrupted by SIGTERM after [\d.]+ s; finished work is kept in ", logs), logs


@pytest.mark.cluster
@pytest.mark.timeout(600)
def test_a_trained_model_labels_audio_as_a_ray_job_on_two_nodes(ray_cluster, demo, tmp_path):
    """`crossemo train` and `jobs/predict.py` submitted to the cluster: the job logs its start and end, and its tasks label every file."""
    config = tmp_path / "fast.toml"
    config.write_text("[method_params.rf]\nn_estimators = 20\n")
    model, out = tmp_path / "model", tmp_path / "labels"
    _finished_job(
        ray_cluster, "python", "-m", "crossemo.cli", "train", "--corpus", f"manifest={demo['synth_studio']}", "--corpus", f"manifest={demo['synth_phone']}",
        "--target", "synth_phone", "--method", "rf", "--config", str(config), "--store", str(tmp_path / "store"), "--out", str(model), "--no-progress",
    )
    logs = _finished_job(ray_cluster, "python", "jobs/predict.py", "--model", str(model), "--audio", str(demo["synth_phone"].parent), "--out", str(out), "--no-progress")
    assert re.search(r"^\S+Z INFO crossemo-job: start: model \S+ \(\w+, rf\); audio \S+ \(16 files\)", logs, re.M), logs
    assert re.search(r"^\S+Z INFO crossemo-job: done: 16 files; 16 labelled; 0 not usable;", logs, re.M), logs
    labels = pd.read_parquet(out / "predictions")
    assert len(labels) == 16 and labels["emotion"].notna().all()
    # A relative --out would land in Ray's copy of the working directory, deleted with the session.
    status, logs = _ended_job(ray_cluster, "python", "jobs/predict.py", "--model", str(model), "--audio", str(demo["synth_phone"].parent), "--out", "labels", "--no-progress")
    assert status == "FAILED" and re.search(r"^\S+Z ERROR crossemo-job: bad input: --out labels lies in Ray's temporary copy of this job's working directory \(\S*/runtime_resources\)", logs, re.M), logs
    tasks = json.loads(ray_cluster.ray("list", "tasks", "--address", ray_cluster.dashboard, "--format", "json", "--limit", "10000", "--detail").stdout)
    labelling = [task for task in tasks if task.get("func_or_class_name", "").startswith("_label_shard") and task["state"] == "FINISHED"]
    assert labelling, "no finished labelling task listed"
