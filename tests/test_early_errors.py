"""Bad settings fail before any Ray work: one line on stderr, exit status 2, nothing written.

Each test runs the real command line on otherwise valid input (the real corpora
in ``../shared``) with one bad setting, and checks that the run stopped at once:
Ray never started and the folder the test works in is exactly as it was.
"""

from __future__ import annotations

import http.server
import os
import socket
import threading
import uuid
from pathlib import Path

import boto3
import pytest
import ray

from crossemo import cli, orchestration, storage


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path below ``folder`` with its size and modification time: what "nothing written" compares."""
    return {str(path.relative_to(folder)): (path.lstat().st_size, path.lstat().st_mtime_ns) for path in folder.rglob("*")}


def refuse(args: list[str], capsys, *, says: str, untouched: Path) -> str:
    """Run the CLI, check it refused in one line without Ray and without writing below ``untouched``; return the line."""
    before = tree(untouched)
    status = cli.main(args)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1 and lines[0].strip(), err
    assert says in err
    assert not ray.is_initialized()
    assert tree(untouched) == before
    return lines[0]


@pytest.fixture
def corpora(shared_corpora) -> list[str]:
    """Two valid corpus arguments."""
    return ["--corpus", f"emovo={shared_corpora}/emovo", "--corpus", f"ravdess={shared_corpora}/ravdess"]


def write_config(folder: Path, shared_corpora: Path, text: str, *, corpora: str | None = None) -> str:
    """A config file with a valid output and corpora unless ``corpora`` replaces them; ``text`` adds settings."""
    if corpora is None:
        corpora = f'[corpora]\nemovo = "{shared_corpora}/emovo"\nravdess = "{shared_corpora}/ravdess"\n'
    path = folder / "run.toml"
    path.write_text(f'out = "{folder / "out"}"\n{text}\n{corpora}')
    return str(path)


# --- output locations -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["features", "run", "evaluate", "report", "demo"])
def test_out_that_is_a_file(command, corpora, tmp_path, capsys):
    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    args = {
        "features": ["features", *corpora, "--out", str(existing)],
        "run": ["run", *corpora, "--out", str(existing)],
        "evaluate": ["evaluate", "--features", str(tmp_path / "features"), "--out", str(existing)],
        "report": ["report", str(existing)],
        "demo": ["demo", "--out", str(existing)],
    }[command]
    line = refuse(args, capsys, says=f"output location {existing}", untouched=tmp_path)
    assert "file" in line
    assert existing.read_text() == "keep me"


def test_out_below_a_file(corpora, tmp_path, capsys):
    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    refuse(["run", *corpora, "--out", str(existing / "out")], capsys, says=f"{existing} is a file, not a folder", untouched=tmp_path)


def empty_store(store: Path) -> Path:
    """A feature store's folders, with what marks a store (its fingerprint index) and nothing else."""
    for folder in ("features", "cache"):
        (store / folder).mkdir(parents=True)
    (store / "cache" / "fingerprints.parquet").write_bytes(b"")
    return store


@pytest.mark.parametrize("command", ["features", "run"])
@pytest.mark.parametrize("inside", ["features", "cache/x"])
def test_out_inside_another_stores_folders(command, inside, corpora, tmp_path, capsys):
    """A run written into a store's features/ would be read back as its tables, and that store's next run would delete it."""
    store = empty_store(tmp_path / "store")
    out = store / inside / "nested"
    refuse([command, *corpora, "--out", str(out)], capsys, says=f"output {out} lies inside the {inside.split('/')[0]} folder of the feature store {store}", untouched=tmp_path)


@pytest.fixture(params=["proc", "read-only folder"])
def unwritable(request, tmp_path) -> Path:
    """An output folder nobody can create.

    Tests run as root, which chmod does not stop; /proc refuses new entries
    even to root. The read-only folder is the case a normal user meets.
    """
    if request.param == "proc":
        if not Path("/proc/self").is_dir():
            pytest.skip("no /proc on this system")
        return Path("/proc") / f"crossemo-{uuid.uuid4().hex}"
    if os.geteuid() == 0:
        pytest.skip("running as root, which writes into a chmod 0o500 folder anyway; the /proc case covers root")
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o500)
    request.addfinalizer(lambda: folder.chmod(0o700))
    return folder / "out"


def test_out_that_cannot_be_written(unwritable, corpora, tmp_path, capsys):
    refuse(["run", *corpora, "--out", str(unwritable)], capsys, says="cannot be written", untouched=tmp_path)
    assert not unwritable.exists()


def test_s3_out_without_bucket(s3, corpora, tmp_path, capsys):
    missing = f"{s3['bucket']}-missing"
    args = ["run", *corpora, "--out", f"s3://{missing}/out", "--storage-option", f"endpoint_url={s3['endpoint']}"]
    refuse(args, capsys, says=f"output location s3://{missing}/out cannot be written", untouched=tmp_path)
    buckets = boto3.client("s3", endpoint_url=s3["endpoint"], region_name="us-east-1").list_buckets()["Buckets"]
    assert missing not in {bucket["Name"] for bucket in buckets}


def test_s3_check_leaves_nothing_behind(s3):
    storage.check_writable(f"s3://{s3['bucket']}/runs/out", storage_options=s3["storage_options"])
    listing = boto3.client("s3", endpoint_url=s3["endpoint"], region_name="us-east-1").list_objects_v2(Bucket=s3["bucket"])
    assert listing.get("KeyCount", 0) == 0


def test_local_check_leaves_nothing_behind(tmp_path):
    storage.check_writable(str(tmp_path / "a" / "b"))
    assert list(tmp_path.iterdir()) == []


# --- other settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_seed_out_of_range(seed, corpora, tmp_path, capsys):
    refuse(["run", *corpora, "--out", str(tmp_path / "out"), "--seed", seed], capsys, says=f"seed must be a whole number from 0 to {2**32 - 1}", untouched=tmp_path)


def test_seed_that_is_not_a_number(shared_corpora, tmp_path, capsys):
    config = write_config(tmp_path, shared_corpora, "seed = true")
    refuse(["run", "--config", config], capsys, says="seed must be a whole number", untouched=tmp_path)


@pytest.mark.parametrize("flags, says", [
    (["--analysis-rate", "1000"], "analysis rate 1000 must be a whole number of Hz from 8000 to 192000"),
    (["--channel", "left"], "channel 'left' must be one of loudest, first, mean or a channel index"),
])
def test_unusable_decode_rules(flags, says, corpora, tmp_path, capsys):
    refuse(["features", *corpora, "--out", str(tmp_path / "out"), *flags], capsys, says=says, untouched=tmp_path)


@pytest.mark.parametrize("text, says", [
    ("[method_params.rf]\nn_estimators = 0", "method_params.rf: The 'n_estimators' parameter"),
    ("[method_params.speaker_norm]\nmax_depth = -3", "method_params.speaker_norm: The 'max_depth' parameter"),
])
def test_method_parameter_values_are_checked_before_any_work(text, says, shared_corpora, tmp_path, capsys):
    config = write_config(tmp_path, shared_corpora, text)
    refuse(["run", "--config", config], capsys, says=says, untouched=tmp_path)


def test_decode_rule_of_the_wrong_type_in_a_config_file(shared_corpora, tmp_path, capsys):
    config = write_config(tmp_path, shared_corpora, 'analysis_rate = "16k"')
    refuse(["run", "--config", config], capsys, says="analysis_rate must be a whole number", untouched=tmp_path)


@pytest.mark.parametrize("address", ["head node:6379", "head:99999", "head", "http://head:8265"])
def test_malformed_address(address, corpora, tmp_path, capsys):
    refuse(["run", *corpora, "--out", str(tmp_path / "out"), "--address", address], capsys, says=f"address {address!r} is not a Ray address", untouched=tmp_path)


def closed_port() -> int:
    """A port of this machine where nothing listens (the system just handed it out and it was closed again)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("form", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}"])
def test_an_address_where_no_cluster_answers_is_one_line_not_a_wait(form, corpora, tmp_path, capsys):
    # ray.init retries such an address for about a quarter of an hour, deaf to Ctrl-C.
    address = form.format(port=closed_port())
    status = cli.main(["run", *corpora, "--out", str(tmp_path / "out"), "--address", address, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1, err
    assert f"no Ray cluster answers at address {address!r} (Connection refused)" in err
    assert not ray.is_initialized()


@pytest.fixture
def web_server():
    """A port that answers HTTP/1.1, as Ray's dashboard does, but no gRPC."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_a_port_that_answers_but_is_not_a_ray_cluster_is_named_as_such(web_server, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{web_server}")
    # auto joins RAY_ADDRESS's cluster, as ray.init does.
    for address in (None, "auto"):
        with pytest.raises(orchestration.ClusterError, match=f"RAY_ADDRESS '127.0.0.1:{web_server}' answers, but not as a Ray cluster does .gRPC.: is that the dashboard's port"):
            orchestration.probe_cluster(address)
    orchestration.check_address(None)  # the early check only reads the address


def test_malformed_ray_address_variable(corpora, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "head")
    refuse(["run", *corpora, "--out", str(tmp_path / "out")], capsys, says="RAY_ADDRESS 'head' is not a Ray address", untouched=tmp_path)


@pytest.mark.parametrize("text, says", [
    ("[method_params.gan]\nn_estimators = 5", "unknown method 'gan'"),
    ("[method_params.rf]\ntrees = 5", "method 'rf' has no parameter(s) trees; it takes: max_depth, max_features, n_estimators\n"),
    ("[method_params.rf]\nrandom_state = 5", "method_params.rf.random_state cannot be set"),
    ("[method_params]\nrf = 5", "method_params.rf must be a table"),
], ids=["unknown-method", "unknown-parameter", "seed-parameter", "not-a-table"])
def test_bad_method_params(text, says, shared_corpora, tmp_path, capsys):
    config = write_config(tmp_path, shared_corpora, text)
    refuse(["run", "--config", config], capsys, says=says, untouched=tmp_path)


@pytest.mark.parametrize("text, corpora, says", [
    ("", 'corpora = "emovo"', "corpora must be a table"),
    ("", 'corpora = ["emovo", "ravdess"]', "corpora must be a table"),
    ("", "[corpora]\nemovo = 5", "corpus 'emovo' must be a URI or a table with a uri"),
    ("", '[corpora]\nown = { recipe = "manifest" }', "corpus 'own' must be a URI or a table with a uri"),
    ("", '[corpora]\nown = { recipe = "manifest", uri = "own.csv", corpus = "mine" }', "is named with name = …, not corpus = …"),
    ('storage_options = "anon"', None, "storage_options must be a table"),
    ("pairs = 3", None, "pairs must be a string or a list of strings"),
], ids=["corpora-string", "corpora-list", "corpus-number", "corpus-without-uri", "corpus-option", "storage-options", "pairs"])
def test_config_file_of_the_wrong_shape(text, corpora, says, shared_corpora, tmp_path, capsys):
    config = write_config(tmp_path, shared_corpora, text, corpora=corpora)
    refuse(["run", "--config", config], capsys, says=says, untouched=tmp_path)


def test_config_file_out_that_is_not_a_path(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text("out = 5\n")
    refuse(["run", "--config", str(config)], capsys, says="out must be a string", untouched=tmp_path)


# --- evaluate: the feature store --------------------------------------------------------------------


def test_features_that_is_a_file(tmp_path, capsys):
    table = tmp_path / "emovo.parquet"
    table.write_bytes(b"not a feature store")
    refuse(["evaluate", "--features", str(table), "--out", str(tmp_path / "out")], capsys, says="is a file, not a feature store folder", untouched=tmp_path)


def test_features_with_a_table_that_is_not_parquet(tmp_path, capsys):
    store = tmp_path / "features"
    store.mkdir()
    (store / "emovo.parquet").write_bytes(b"not parquet")
    refuse(["evaluate", "--features", str(store), "--out", str(tmp_path / "out")], capsys, says=f"--features {store}:", untouched=tmp_path)


def test_evaluate_checks_its_settings(tmp_path, capsys):
    refuse(["evaluate", "--features", str(tmp_path), "--out", str(tmp_path / "out"), "--seed", "-1"], capsys, says="seed must be", untouched=tmp_path)
