"""A killed driver or worker loses no finished work: every task writes its own result.

- The driver (``crossemo run`` with its in-process Ray) is SIGKILLed with its
  whole process group part-way through the evaluation; none of its processes
  may be left, and the next run reuses every result written before the kill
  and ends with the same tables as a run never interrupted.
- One Ray worker is SIGKILLed while it executes a task; Ray retries the task
  and the run ends with the same tables as a run never interrupted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psutil
import pytest

from crossemo import pipeline, protocol
from crossemo.synthetic import make_demo_corpora

TABLES = ("table2", "table3", "table2_uar", "table3_uar")
JOB_SECONDS = 240
KILL_AFTER_RESULTS = 3
"""The driver is killed once this many result files exist."""

# Every method, with models large enough that the evaluation takes some
# seconds (a window to kill in) and small enough that the whole job stays
# well under a minute on two cores.
MODERATE_CONFIG = """\
[method_params.rf]
n_estimators = 100

[method_params.multitask]
n_estimators = 100

[method_params.norm_neutral]
n_estimators = 100

[method_params.norm_distribution]
n_estimators = 100

[method_params.speaker_norm]
n_estimators = 100

[method_params.fcnn]
epochs = 10
finetune_epochs = 10

[method_params.dbn]
pretrain_epochs = 5
finetune_epochs = 10
"""


@dataclass
class Study:
    """Corpora, a config, and a run that nobody interrupts, started in the background.

    The uninterrupted run is the reference for both tests; it runs beside the
    first test's own jobs, and :meth:`clean` waits for it.
    """

    root: Path
    manifests: dict[str, Path]
    config: Path
    process: subprocess.Popen | None = None
    log: Path | None = None
    _clean: tuple[dict[str, pd.DataFrame], dict] | None = None

    def clean(self) -> tuple[dict[str, pd.DataFrame], dict]:
        """The uninterrupted run's tables and run record."""
        if self._clean is None:
            assert self.process is not None and self.log is not None
            try:
                status = self.process.wait(timeout=JOB_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
                raise
            assert status == 0, f"the uninterrupted run failed with status {status}\n{self.log.read_text()[-6000:]}"
            out = self.root / "clean"
            record = pipeline.latest_record(str(out), storage_options=None)
            # Per target, scenario 2 per speaker: the baselines and the twins; per pair, scenario 1 once and scenario 3 per speaker: rf and every transfer method.
            twins, transfer = len(protocol.TARGET_ONLY_METHODS), len(protocol.TRANSFER_METHODS)
            assert record["counts"]["tasks"] == 2 * 3 * (2 + twins) + 2 + 2 * 3 * (1 + transfer)
            self._clean = (read_tables(out), record)
        return self._clean

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        return self.clean()[0]

    @property
    def tasks(self) -> int:
        return self.clean()[1]["counts"]["tasks"]


def environment(ray_tmp: Path) -> dict[str, str]:
    """This environment, with Ray's files below ``ray_tmp`` and no cluster to join."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(ray_tmp)
    return env


def command(study: Study, out: Path) -> list[str]:
    corpora = [arg for path in study.manifests.values() for arg in ("--corpus", f"manifest={path}")]
    return [sys.executable, "-m", "crossemo.cli", "run", *corpora, "--out", str(out), "--config", str(study.config), "--no-progress"]


def read_tables(out: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_csv(out / "report" / f"{name}.csv") for name in TABLES}


def assert_same_tables(tables: dict[str, pd.DataFrame], expected: dict[str, pd.DataFrame]) -> None:
    assert sorted(tables) == sorted(expected)
    for name, table in expected.items():
        pd.testing.assert_frame_equal(tables[name], table, check_exact=True, obj=name)


def result_files(out: Path) -> list[Path]:
    """The finished result files (a file being written has a temporary name)."""
    return sorted((out / "results").rglob("*.parquet")) if (out / "results").is_dir() else []


def finished(result: subprocess.CompletedProcess, what: str) -> None:
    assert result.returncode == 0, f"{what} failed with status {result.returncode}\n--- output ---\n{result.stdout[-6000:]}"


@pytest.fixture(scope="module")
def short_tmp() -> Iterator[Path]:
    """A short folder for Ray's files (its unix socket paths must stay short)."""
    path = Path(tempfile.mkdtemp(prefix="ce-resume-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, short_tmp: Path) -> Iterator[Study]:
    root = tmp_path_factory.mktemp("resume")
    study = Study(root=root, manifests=make_demo_corpora(root / "corpora", speakers=3, per_emotion=2), config=root / "moderate.toml", log=root / "clean.log")
    study.config.write_text(MODERATE_CONFIG)
    with open(study.log, "wb") as handle:
        study.process = subprocess.Popen(
            command(study, root / "clean"), env=environment(short_tmp / "clean"), cwd=root, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        yield study
    finally:
        if study.process.poll() is None:
            os.killpg(study.process.pid, signal.SIGKILL)
            study.process.wait(timeout=30)


def _session_members(session: int) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session:
                members.append(process)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def _alive(process: psutil.Process) -> bool:
    """Running and not a zombie (a dead process nobody reaped yet holds nothing)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _describe(processes: list[psutil.Process]) -> str:
    lines = []
    for process in processes:
        try:
            lines.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
        except psutil.Error:
            lines.append(f"{process.pid} (gone)")
    return "\n".join(lines)


def test_killed_driver_leaves_no_process_and_the_next_run_resumes(study: Study, tmp_path: Path, short_tmp: Path) -> None:
    out = tmp_path / "out"
    log = tmp_path / "killed.log"
    env = environment(short_tmp / "killed")
    with open(log, "wb") as handle:
        driver = subprocess.Popen(command(study, out), env=env, cwd=study.root, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    watched: dict[int, psutil.Process] = {}
    try:
        deadline = time.monotonic() + JOB_SECONDS
        while len(result_files(out)) < KILL_AFTER_RESULTS:
            assert driver.poll() is None, f"the driver ended (status {driver.returncode}) before {KILL_AFTER_RESULTS} results were written:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"no {KILL_AFTER_RESULTS} results after {JOB_SECONDS} s:\n{log.read_text()[-4000:]}"
            time.sleep(0.05)
        # Everything the driver started: its descendants and its session (a process may leave the tree or the group).
        try:
            watched.update((p.pid, p) for p in psutil.Process(driver.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass
        watched.update((p.pid, p) for p in _session_members(driver.pid))
        assert any("raylet" in " ".join(p.cmdline()) for p in watched.values() if _alive(p)), "no raylet among the driver's processes:\n" + _describe(list(watched.values()))
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
    # Every process of the killed job must be gone (Ray's own processes die with the driver).
    deadline = time.monotonic() + 30
    watched.update((p.pid, p) for p in _session_members(driver.pid))
    left = [p for p in watched.values() if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [p for p in watched.values() if _alive(p)] + [p for p in _session_members(driver.pid) if _alive(p) and p.pid not in watched]
    if left:
        description = _describe(left)
        for process in left:
            try:
                process.kill()
            except psutil.Error:
                pass
        pytest.fail(f"processes of the killed driver still run 30 s later:\n{description}")

    at_kill = {path: path.stat().st_mtime_ns for path in result_files(out)}
    total = study.tasks
    assert KILL_AFTER_RESULTS <= len(at_kill) < total, f"{len(at_kill)} of {total} results at the kill: not part-way"
    assert not (out / "report").exists(), "the killed run got to the tables"

    resumed = subprocess.run(command(study, out), env=environment(short_tmp / "resumed"), cwd=study.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=JOB_SECONDS)
    finished(resumed, "the resumed run")
    record = pipeline.latest_record(str(out), storage_options=None)
    counts = record["counts"]
    assert counts["tasks"] == total
    assert counts["tasks_reused"] == len(at_kill), counts
    # The features were all extracted before the evaluation started.
    assert counts["extracted"] == 0 and counts["features_reused"] == counts["utterances"] == 2 * 3 * 4 * 2, counts
    # What finished before the kill is read, not recomputed; the rest runs (plus the fcnn's shared source networks).
    assert total - len(at_kill) <= counts["fits"] <= total - len(at_kill) + 2, counts
    for path, mtime in at_kill.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was written again"
    assert len(result_files(out)) == total
    assert_same_tables(read_tables(out), study.tables)


def _kill_a_running_task_worker(out: Path, run: Future, deadline: float) -> int:
    """Once results appear, SIGKILL a Ray worker that is executing a ``_run_task``; returns its pid.

    A candidate is stopped (SIGSTOP) before its title is checked, so it cannot
    finish its task between the check and the kill.
    """
    me = psutil.Process()
    while time.monotonic() < deadline:
        assert not run.done(), f"the run ended before a task could be killed: {run.exception()!r}"
        if result_files(out):
            for process in me.children(recursive=True):
                try:
                    if not " ".join(process.cmdline()).startswith("ray::_run_task"):
                        continue
                    process.suspend()
                    if " ".join(process.cmdline()).startswith("ray::_run_task"):
                        process.kill()
                        return process.pid
                    process.resume()
                except psutil.Error:
                    continue
        time.sleep(0.02)
    raise AssertionError("no worker was seen executing a task")


def test_killed_worker_task_is_retried_and_the_run_completes(study: Study, tmp_path: Path, local_ray: None) -> None:
    out = tmp_path / "out"
    config = pipeline.RunConfig.from_toml(str(study.config))
    config.corpora = [pipeline.CorpusSpec(recipe="manifest", uri=str(path)) for path in study.manifests.values()]
    config.out = str(out)
    config.progress = False
    with ThreadPoolExecutor(max_workers=1) as pool:
        run = pool.submit(pipeline.run, config)
        killed = _kill_a_running_task_worker(out, run, time.monotonic() + JOB_SECONDS)
        record, _, _ = run.result(timeout=JOB_SECONDS)
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == psutil.STATUS_ZOMBIE
    total = study.tasks
    # The killed task's attempt never returned; the run could only finish by running it again.
    assert record.counts["tasks"] == total and record.counts["tasks_reused"] == 0
    assert len(result_files(out)) == total
    assert_same_tables(read_tables(out), study.tables)
