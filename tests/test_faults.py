"""Faults: flaky object storage is retried then reported, and concurrent runs are safe."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pandas as pd
import pytest

from crossemo import featurestore, orchestration
from crossemo.features import FeatureExtractor
from crossemo.synthetic import make_demo_corpora


class FlakyProxy:
    """An HTTP proxy in front of the S3 server that fails chosen requests.

    ``failures[path] = n`` answers the first ``n`` GETs of an object key with
    503 SlowDown; ``-1`` fails them all. ``delays[path] = n`` stalls the
    first ``n`` GETs past the client's read timeout.
    """

    def __init__(self, upstream: str):
        self.upstream = upstream.removeprefix("http://")
        self.failures: dict[str, int] = {}
        self.delays: dict[str, int] = {}
        self.seen: dict[str, int] = {}
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self):
                key = self.path.split("?", 1)[0]
                with proxy.lock:
                    if self.command == "GET":
                        proxy.seen[key] = proxy.seen.get(key, 0) + 1
                    fail = self.command == "GET" and proxy.failures.get(key, 0) != 0
                    if fail and proxy.failures[key] > 0:
                        proxy.failures[key] -= 1
                    stall = self.command == "GET" and proxy.delays.get(key, 0) > 0
                    if stall:
                        proxy.delays[key] -= 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if stall:
                    time.sleep(3)
                if fail:
                    payload = b"<?xml version='1.0'?><Error><Code>SlowDown</Code><Message>injected fault</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                connection = http.client.HTTPConnection(proxy.upstream, timeout=30)
                connection.request(self.command, self.path, body=body, headers=dict(self.headers))
                response = connection.getresponse()
                data = response.read()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                # a HEAD answer has no body but must keep the object's length
                self.send_header("Content-Length", response.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def s3_corpus(s3, tmp_path):
    manifests = make_demo_corpora(tmp_path / "corpora", speakers=1, per_emotion=1)
    folder = manifests["synth_studio"].parent
    client = boto3.client("s3", endpoint_url=s3["endpoint"], region_name="us-east-1")
    for path in folder.rglob("*.wav"):
        client.upload_file(str(path), s3["bucket"], f"audio/{path.relative_to(folder).as_posix()}")
    files = sorted(f"s3://{s3['bucket']}/audio/{p.relative_to(folder).as_posix()}" for p in folder.rglob("*.wav"))
    return s3, pd.DataFrame({"uri": files, "fingerprint": ["x"] * len(files)})


def test_s3_errors_and_timeouts_are_retried_with_backoff(s3_corpus, tmp_path):
    s3, files = s3_corpus
    with FlakyProxy(s3["endpoint"]) as proxy:
        keys = ["/" + uri.removeprefix("s3://") for uri in files["uri"]]
        proxy.failures[keys[0]] = 3
        proxy.delays[keys[1]] = 1
        options = {**s3["storage_options"], "endpoint_url": proxy.endpoint, "config_kwargs": {"retries": {"max_attempts": 6, "mode": "standard"}, "read_timeout": 1}}
        store = featurestore.FeatureStore(str(tmp_path / "out"))
        started = time.perf_counter()
        outcome = featurestore.extract_shard(files, extractor=FeatureExtractor("is10"), store=store, storage_options=options)
        elapsed = time.perf_counter() - started
    assert outcome.rejected.empty, outcome.rejected
    assert outcome.extracted == len(files)
    assert proxy.seen[keys[0]] >= 4  # three injected 503s, then the real answer
    assert proxy.seen[keys[1]] >= 2  # the stalled GET timed out and was sent again
    assert elapsed > 0.1  # backoff waited between attempts


def test_s3_error_that_persists_is_reported_and_the_shard_goes_on(s3_corpus, tmp_path):
    s3, files = s3_corpus
    with FlakyProxy(s3["endpoint"]) as proxy:
        broken = "/" + files["uri"].iloc[0].removeprefix("s3://")
        proxy.failures[broken] = -1
        options = {**s3["storage_options"], "endpoint_url": proxy.endpoint, "config_kwargs": {"retries": {"max_attempts": 3, "mode": "standard"}}}
        store = featurestore.FeatureStore(str(tmp_path / "out"))
        outcome = featurestore.extract_shard(files, extractor=FeatureExtractor("is10"), store=store, storage_options=options)
    assert outcome.extracted == len(files) - 1
    assert len(outcome.rejected) == 1
    row = outcome.rejected.iloc[0]
    assert row["uri"] == files["uri"].iloc[0] and row["stage"] == "read"
    assert "injected fault" in row["reason"]  # the server's own message reaches the report
    # botocore's attempts, within s3fs's own retries of SlowDown: retried, and bounded
    assert 3 <= proxy.seen[broken] <= 40


def test_two_runs_writing_to_one_output_at_once_are_safe(tmp_path):
    """Both finish; every file is whole; the tables equal a run that was alone."""
    manifests = make_demo_corpora(tmp_path / "corpora", speakers=2, per_emotion=1)
    config = tmp_path / "fast.toml"
    config.write_text('methods = "rf"\n[method_params.rf]\nn_estimators = 10\n')

    def command(out: Path) -> list[str]:
        corpora = [f"--corpus=manifest={path}" for path in manifests.values()]
        return [sys.executable, "-m", "crossemo.cli", "run", "--config", str(config), *corpora, "--out", str(out), "--no-progress"]

    env = {**os.environ, "RAY_num_prestart_python_workers": "0"}
    shared = tmp_path / "shared-out"
    runs = [subprocess.Popen(command(shared), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True) for _ in range(2)]
    outputs = [run.communicate(timeout=600)[0].decode() for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    alone = tmp_path / "alone-out"
    subprocess.run(command(alone), check=True, capture_output=True, env=env, timeout=600)
    for name in ("table2", "table3", "table2_uar", "table3_uar"):
        pd.testing.assert_frame_equal(pd.read_csv(shared / "report" / f"{name}.csv"), pd.read_csv(alone / "report" / f"{name}.csv"))
    results = sorted(p.relative_to(shared / "results") for p in (shared / "results").rglob("*.parquet"))
    assert results == sorted(p.relative_to(alone / "results") for p in (alone / "results").rglob("*.parquet"))
    assert not list(shared.rglob("*.tmp"))
    for path in shared.rglob("*.parquet"):
        pd.read_parquet(path)  # every file is whole
    assert len(list((shared / "runs").iterdir())) == 2


def test_sigterm_while_ray_works_is_reported_as_sigterm(tmp_path):
    """SIGTERM (what `ray job stop` sends) during a Ray wait: exit 130 and a log line naming SIGTERM.

    Ray turns the handler's exception into a bare KeyboardInterrupt, so the
    job cannot read the signal off the exception; this pins down that it still knows.
    """
    manifests = make_demo_corpora(tmp_path / "corpora", speakers=2, per_emotion=1)
    corpora = [f"--corpus=manifest={path}" for path in manifests.values()]
    script = Path(__file__).resolve().parents[1] / "jobs" / "run.py"
    env = {**os.environ, "RAY_num_prestart_python_workers": "0"}
    env.pop("RAY_ADDRESS", None)
    job = subprocess.Popen(
        [sys.executable, str(script), *corpora, "--out", str(tmp_path / "out"), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True, text=True,
    )
    lines = []
    for line in job.stdout:
        lines.append(line)
        if "crossemo-job: start:" in line:
            break
    # The full-size study runs for minutes; let it reach its Ray waits.
    time.sleep(8)
    job.terminate()
    rest, _ = job.communicate(timeout=120)
    log = "".join(lines) + rest
    assert job.returncode == 130, log
    assert "ERROR crossemo-job: interrupted by SIGTERM after" in log, log


def test_sigterm_while_ray_starts_is_reported_as_sigterm(monkeypatch):
    """Ray's own handler turns a SIGTERM during ray.init into sys.exit(15); the job must still see an interrupt by SIGTERM."""
    import ray

    def init_stopped_by_sigterm(**options):
        raise SystemExit(signal.SIGTERM)

    monkeypatch.setattr(orchestration, "_received_signal", None)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init_stopped_by_sigterm)
    with pytest.raises(KeyboardInterrupt):
        orchestration.connect()
    assert orchestration.interrupting_signal() == "SIGTERM"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_ray_shuts_down_at_exit_ends_quietly(tmp_path, signum):
    """A SIGTERM or Ctrl-C after the work is done, while Ray shuts itself down at exit: no traceback under the summary, status 143 or 130."""
    script = tmp_path / "job.py"
    script.write_text(
        "import atexit, os, signal, time\n"
        "from crossemo import orchestration\n"
        "orchestration.connect(num_cpus=1)\n"
        "exiting, sleep = [], time.sleep\n"
        # Ray's exit hook waits (time.sleep) while its processes stop: the signal comes at its first wait.
        f"time.sleep = lambda seconds: (exiting and os.kill(os.getpid(), {int(signum)}), sleep(seconds))\n"
        "atexit.register(exiting.append, True)\n"
        "print('summary', flush=False)\n"
    )
    env = {**os.environ, "RAY_num_prestart_python_workers": "0"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done
    assert done.returncode == 128 + signum and done.stdout.strip() == "summary", done
