"""The whole job against a real S3 server: audio, features, results and report in a bucket.

The synthetic corpora go into a SeaweedFS bucket on loopback; ``crossemo run``
runs as its own process, as a user would start it, with the credentials in the
AWS environment variables and the endpoint as a storage option. The same job
on local disk must give the same features and the same tables, no object the
job writes and no line it prints may hold the credentials, and a wrong secret
must end in one line naming the access problem.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from seaweed import SeaweedS3, seaweed  # noqa: F401  (the fixture)

from crossemo import featurestore
from crossemo.synthetic import make_demo_corpora

pytestmark = pytest.mark.s3

JOB_SECONDS = 240
TABLES = ("table2", "table3", "table2_uar", "table3_uar")
METHODS = "rf,norm_neutral"
FAST_CONFIG = """\
# Small forests so the end-to-end job takes seconds; the numbers mean nothing.
[method_params.rf]
n_estimators = 20

[method_params.norm_neutral]
n_estimators = 20
"""


@dataclass
class Job:
    """One finished ``crossemo run``."""

    out: str
    corpora: str
    stdout: str
    stderr: str
    ray_logs: Path


@dataclass
class Runs:
    """The same job on S3 and on local disk."""

    prefix: str
    s3: Job
    local: Job


def crossemo(*args: str, env: dict[str, str], cwd: Path, timeout: float = JOB_SECONDS) -> subprocess.CompletedProcess:
    """``python -m crossemo.cli ARGS`` as its own process."""
    return subprocess.run([sys.executable, "-m", "crossemo.cli", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def base_environment(ray_tmp: Path | None = None) -> dict[str, str]:
    """This environment without AWS settings or a Ray address (each job starts its own Ray)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "RAY_ADDRESS"}
    if ray_tmp is not None:
        env["RAY_TMPDIR"] = str(ray_tmp)
    return env


def run_job(corpora: str, out: str, config: Path, *, env: dict[str, str], cwd: Path, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return crossemo(
        "run",
        "--corpus", f"manifest={corpora}/synth_studio/synth_studio.csv",
        "--corpus", f"manifest={corpora}/synth_phone/synth_phone.csv",
        "--out", out, "--config", str(config), "--methods", METHODS, "--no-progress", *extra,
        env=env, cwd=cwd,
    )


def upload(folder: Path, server: SeaweedS3, prefix: str) -> int:
    """Put every file below ``folder`` under ``prefix`` in the server's bucket; returns how many."""
    client = server.client()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for path in files:
        client.put_object(Bucket=server.bucket, Key=f"{prefix}/{path.relative_to(folder).as_posix()}", Body=path.read_bytes())
    return len(files)


def objects(server: SeaweedS3, prefix: str) -> dict[str, bytes]:
    """Every object below ``prefix/`` and its bytes."""
    client = server.client()
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=server.bucket, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            found[item["Key"]] = client.get_object(Bucket=server.bucket, Key=item["Key"])["Body"].read()
    return found


def finished(result: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{what} failed with status {result.returncode}\n--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-8000:]}"
    return result


@pytest.fixture(scope="module")
def runs(seaweed: SeaweedS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:  # noqa: F811
    root = tmp_path_factory.mktemp("e2e")
    make_demo_corpora(root / "corpora", speakers=2, per_emotion=2)
    config = root / "fast.toml"
    config.write_text(FAST_CONFIG)
    prefix = f"e2e-{uuid.uuid4().hex[:8]}"
    assert upload(root / "corpora", seaweed, f"{prefix}/corpora") == 2 * (2 * 4 * 2 + 1)
    # Short paths: Ray's unix sockets live below RAY_TMPDIR.
    ray_tmp = Path(tempfile.mkdtemp(prefix="ce-e2e-"))
    places = {
        "s3": (f"s3://{seaweed.bucket}/{prefix}/corpora", f"s3://{seaweed.bucket}/{prefix}/out"),
        "local": (str(root / "corpora"), str(root / "out")),
    }
    try:
        # The two jobs are independent (each starts its own Ray): run them side by side.
        with ThreadPoolExecutor(max_workers=2) as pool:
            endpoint = ("--storage-option", f"endpoint_url={seaweed.endpoint}")
            started = {
                "s3": pool.submit(run_job, *places["s3"], config, env=seaweed.environment(base=base_environment(ray_tmp / "s3")), cwd=root, extra=endpoint),
                "local": pool.submit(run_job, *places["local"], config, env=base_environment(ray_tmp / "local"), cwd=root),
            }
            results = {where: future.result() for where, future in started.items()}
        jobs = {}
        for where, result in results.items():
            finished(result, f"the {where} job")
            jobs[where] = Job(out=places[where][1], corpora=places[where][0], stdout=result.stdout, stderr=result.stderr, ray_logs=ray_tmp / where)
        yield Runs(prefix=prefix, s3=jobs["s3"], local=jobs["local"])
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def s3_csv(server: SeaweedS3, key: str) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(server.client().get_object(Bucket=server.bucket, Key=key)["Body"].read()))


def test_tables_from_s3_equal_tables_from_local_disk(runs: Runs, seaweed: SeaweedS3) -> None:  # noqa: F811
    for name in TABLES:
        remote = s3_csv(seaweed, f"{runs.prefix}/out/report/{name}.csv")
        local = pd.read_csv(Path(runs.local.out) / "report" / f"{name}.csv")
        assert len(local) == 2 and not local[["majority"]].isna().any().any(), name
        pd.testing.assert_frame_equal(remote, local, check_exact=True, obj=name)
    markdown = seaweed.client().get_object(Bucket=seaweed.bucket, Key=f"{runs.prefix}/out/report/tables.md")["Body"].read().decode()
    assert markdown == (Path(runs.local.out) / "report" / "tables.md").read_text()
    assert "Table 2 (accuracy %)" in runs.s3.stdout


def _relative_uris(frame: pd.DataFrame, root: str) -> pd.DataFrame:
    assert frame["uri"].str.startswith(root + "/").all(), frame["uri"].head()
    return frame.assign(uri=frame["uri"].str.slice(len(root) + 1))


def test_features_from_s3_equal_features_from_local_disk(runs: Runs, seaweed: SeaweedS3) -> None:  # noqa: F811
    remote = featurestore.load_features(f"{runs.s3.out}/features", storage_options=seaweed.storage_options | {"key": seaweed.access_key, "secret": seaweed.secret_key})
    local = featurestore.load_features(str(Path(runs.local.out) / "features"))
    assert sorted(remote) == sorted(local) == ["synth_phone", "synth_studio"]
    for corpus in local:
        assert len(local[corpus]) == 16
        ours = _relative_uris(local[corpus], runs.local.corpora)
        theirs = _relative_uris(remote[corpus], runs.s3.corpora)
        pd.testing.assert_frame_equal(theirs, ours, check_exact=True, obj=corpus)


def _parquet_texts(data: bytes) -> list[str]:
    """Every text a Parquet file holds: file and schema metadata and each string or binary cell."""
    handle = pq.ParquetFile(io.BytesIO(data))
    texts = [f"{k!r}={v!r}" for k, v in (handle.metadata.metadata or {}).items()]
    table = handle.read()
    for column in table.columns:
        kind = column.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_dictionary(kind):
            texts.extend(str(value) for value in column.to_pylist())
    return texts


def assert_no_credentials(server: SeaweedS3, written: dict[str, bytes], output: str, ray_logs: Path) -> None:
    """Neither the access key nor the secret is in any object, in the job's output or in Ray's logs."""
    secrets = {"access key": server.access_key, "secret key": server.secret_key}
    for name, data in written.items():
        for label, value in secrets.items():
            assert value.encode() not in data, f"the {label} is in {name}"
        if name.endswith(".parquet"):
            texts = "\n".join(_parquet_texts(data))
            for label, value in secrets.items():
                assert value not in texts, f"the {label} is in the contents of {name}"
    for label, value in secrets.items():
        assert value not in output, f"the {label} is in the job's output"
    logs = [path for path in ray_logs.rglob("*") if path.is_file()]
    assert any(path.suffix in (".out", ".err", ".log") for path in logs), "the job left no Ray logs to check"
    for path in logs:
        data = path.read_bytes()
        for label, value in secrets.items():
            assert value.encode() not in data, f"the {label} is in Ray's log {path}"


def test_credentials_are_written_nowhere(runs: Runs, seaweed: SeaweedS3) -> None:  # noqa: F811
    written = objects(seaweed, f"{runs.prefix}/out")
    names = list(written)
    assert any(name.endswith("/run.json") for name in names), names
    assert any("/results/" in name and name.endswith(".parquet") for name in names), names
    assert any("/features/" in name and name.endswith(".parquet") for name in names), names
    assert any(name.endswith("/report/table3.csv") for name in names), names
    assert sum(name.endswith(".parquet") for name in names) >= 20
    assert_no_credentials(seaweed, written, runs.s3.stdout + runs.s3.stderr, runs.s3.ray_logs)


def test_credentials_given_as_storage_options_are_written_nowhere(runs: Runs, seaweed: SeaweedS3, tmp_path: Path) -> None:  # noqa: F811
    """Credentials on the command line travel to every task; the run record shows them masked and nothing else holds them."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="ce-e2e-"))
    try:
        env = base_environment(ray_tmp) | {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": seaweed.region}
        out = f"s3://{seaweed.bucket}/{runs.prefix}/with-options"
        result = finished(
            crossemo(
                "features",
                "--corpus", f"manifest={runs.s3.corpora}/synth_studio/synth_studio.csv",
                "--corpus", f"manifest={runs.s3.corpora}/synth_phone/synth_phone.csv",
                "--out", out, "--no-progress",
                "--storage-option", f"endpoint_url={seaweed.endpoint}",
                "--storage-option", f"key={seaweed.access_key}",
                "--storage-option", f"secret={seaweed.secret_key}",
                env=env, cwd=tmp_path,
            ),
            "crossemo features with credentials as storage options",
        )
        assert "32 files extracted" in result.stdout
        written = objects(seaweed, f"{runs.prefix}/with-options")
        records = [json.loads(data) for name, data in written.items() if name.endswith("/run.json")]
        assert len(records) == 1
        options = records[0]["settings"]["storage_options"]
        assert options == {"endpoint_url": seaweed.endpoint, "key": "***", "secret": "***"}
        assert sum("/features/" in name and name.endswith(".parquet") for name in written) >= 2
        assert_no_credentials(seaweed, written, result.stdout + result.stderr, ray_tmp)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_report_rebuilds_the_tables_from_results_on_s3(runs: Runs, seaweed: SeaweedS3, tmp_path: Path) -> None:  # noqa: F811
    before = {name: s3_csv(seaweed, f"{runs.prefix}/out/report/{name}.csv") for name in TABLES}
    client = seaweed.client()
    for name in TABLES:
        client.delete_object(Bucket=seaweed.bucket, Key=f"{runs.prefix}/out/report/{name}.csv")
    result = finished(
        crossemo("report", runs.s3.out, "--storage-option", f"endpoint_url={seaweed.endpoint}", env=seaweed.environment(base=base_environment()), cwd=tmp_path, timeout=120),
        "crossemo report",
    )
    assert seaweed.secret_key not in result.stdout + result.stderr
    for name in TABLES:
        pd.testing.assert_frame_equal(s3_csv(seaweed, f"{runs.prefix}/out/report/{name}.csv"), before[name], check_exact=True, obj=name)


@pytest.mark.parametrize("how", ["environment", "storage-option"])
def test_a_wrong_secret_ends_in_one_line_naming_access(how: str, runs: Runs, seaweed: SeaweedS3, tmp_path: Path) -> None:  # noqa: F811
    wrong = "wrong-" + uuid.uuid4().hex
    config = tmp_path / "fast.toml"
    config.write_text(FAST_CONFIG)
    extra = ("--storage-option", f"endpoint_url={seaweed.endpoint}")
    if how == "environment":
        env = seaweed.environment(secret=wrong, base=base_environment())
    else:
        env = base_environment() | {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": seaweed.region}
        extra += ("--storage-option", f"key={seaweed.access_key}", "--storage-option", f"secret={wrong}")
    out = f"s3://{seaweed.bucket}/{runs.prefix}/denied-{how}"
    result = run_job(runs.s3.corpora, out, config, env=env, cwd=tmp_path, extra=extra)
    assert result.returncode == 2, f"status {result.returncode}\n{result.stdout}\n{result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("crossemo: error:"), lines[0]
    assert "access" in lines[0].lower() and "credentials" in lines[0].lower(), lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    for value in (wrong, seaweed.secret_key):
        assert value not in result.stdout + result.stderr
    assert objects(seaweed, f"{runs.prefix}/denied-{how}") == {}


def test_train_and_predict_from_and_to_s3(runs: Runs, seaweed: SeaweedS3, tmp_path: Path) -> None:  # noqa: F811
    """A bundle trained from the S3 run labels the S3 audio into S3, as the same commands do on local disk; no credential anywhere."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="ce-e2e-"))
    endpoint = ("--storage-option", f"endpoint_url={seaweed.endpoint}")
    env = seaweed.environment(base=base_environment(ray_tmp))
    places = {
        "s3": (runs.s3.out, runs.s3.corpora, f"s3://{seaweed.bucket}/{runs.prefix}/model", f"s3://{seaweed.bucket}/{runs.prefix}/labels", endpoint, env),
        "local": (runs.local.out, runs.local.corpora, str(tmp_path / "model"), str(tmp_path / "labels"), (), base_environment(ray_tmp / "local")),
    }
    outputs, labels = "", {}
    try:
        for where, (run_out, corpora, model, out, extra, environment) in places.items():
            trained = finished(crossemo("train", "--from-run", run_out, "--target", "synth_phone", "--method", "rf", "--out", model, "--no-progress", *extra, env=environment, cwd=tmp_path), f"train on {where}")
            assert "0 extracted" in trained.stdout  # the run's feature store, on S3 for the S3 run
            predicted = finished(crossemo("predict", "--model", model, "--audio", f"{corpora}/synth_phone", "--speaker-pattern", r"/(?P<speaker>p\d+)/", "--out", out, "--no-progress", *extra, env=environment, cwd=tmp_path), f"predict on {where}")
            assert "16 labelled" in predicted.stdout, predicted.stdout
            outputs += trained.stdout + trained.stderr + predicted.stdout + predicted.stderr
            options = seaweed.storage_options | {"key": seaweed.access_key, "secret": seaweed.secret_key} if where == "s3" else {}
            frame = pd.read_parquet(f"{out}/predictions", storage_options=options or None)
            assert set(frame["speaker"]) == {"p01", "p02"}
            labels[where] = _relative_uris(frame, corpora).drop(columns=["input", "model_id"]).sort_values("uri").reset_index(drop=True)
        pd.testing.assert_frame_equal(labels["s3"], labels["local"], check_exact=True)
        written = {**objects(seaweed, f"{runs.prefix}/model"), **objects(seaweed, f"{runs.prefix}/labels")}
        assert any(name.endswith("/model.json") for name in written) and any("/predictions/part-" in name for name in written), list(written)
        assert_no_credentials(seaweed, written, outputs, ray_tmp)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
