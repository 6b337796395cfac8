"""Object storage as the driver sees it while workers write: a listing it made never hides what another process wrote since."""

from __future__ import annotations

import copy
import io
import socket
import time

import boto3
import pandas as pd
import pyarrow.parquet as pq
import pytest

from crossemo import storage


def test_a_file_another_process_wrote_after_a_listing_is_found_and_listed(s3):
    """A predict driver lists the output's parts, its Ray workers write new ones, then it reads them all.

    With s3fs's listing cache, the second listing and every read of a new part
    answered from the first listing: the run ended with exit 2 and a bare path.
    """
    options = s3["storage_options"]
    folder = f"s3://{s3['bucket']}/labels/predictions"
    storage.write_frame(pd.DataFrame({"uri": ["a.wav"]}), f"{folder}/part-a.parquet", storage_options=options, metadata={"files": "a"})
    assert storage.list_files(folder, suffix=".parquet", storage_options=options) == [f"{folder}/part-a.parquet"]
    assert storage.read_metadata(f"{folder}/part-a.parquet", storage_options=options)["files"] == "a"

    # Another process (a worker), not this one's filesystem object, writes the next part.
    body = io.BytesIO()
    pq.write_table(storage.frame_table(pd.DataFrame({"uri": ["b.wav"]}), metadata={"files": "b"}), body)
    client = boto3.client("s3", endpoint_url=s3["endpoint"], region_name="us-east-1")
    client.put_object(Bucket=s3["bucket"], Key="labels/predictions/part-b.parquet", Body=body.getvalue())

    assert storage.read_metadata(f"{folder}/part-b.parquet", storage_options=options)["files"] == "b"
    assert storage.list_files(folder, suffix=".parquet", storage_options=options) == [f"{folder}/part-a.parquet", f"{folder}/part-b.parquet"]
    assert storage.exists(f"{folder}/part-b.parquet", storage_options=options)
    # When it was written, as the upload time (what picks the newest of two parts recording a file).
    assert abs(storage.modified(f"{folder}/part-b.parquet", storage_options=options) - time.time()) < 120

    # And a part another process removed is gone from the next listing.
    client.delete_object(Bucket=s3["bucket"], Key="labels/predictions/part-a.parquet")
    assert storage.list_files(folder, suffix=".parquet", storage_options=options) == [f"{folder}/part-b.parquet"]
    assert not storage.exists(f"{folder}/part-a.parquet", storage_options=options)


def test_the_write_probe_names_an_unreachable_endpoint_after_a_few_attempts(monkeypatch):
    """A wrong endpoint took the run's eight attempts with backoff, over a minute, before its one-line error."""
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    seen: list[dict] = []  # copies: botocore rewrites the retries it is given in place
    filesystem = storage.filesystem
    monkeypatch.setattr(storage, "filesystem", lambda uri, *, storage_options=None: seen.append(copy.deepcopy(storage_options)) or filesystem(uri, storage_options=storage_options))
    with pytest.raises(storage.StorageError, match=f"cannot be written: EndpointConnectionError: .*127.0.0.1:{port}"):
        storage.check_writable("s3://bucket/out", storage_options={"endpoint_url": f"http://127.0.0.1:{port}"})
    assert seen[-1]["config_kwargs"]["retries"]["max_attempts"] == storage.PROBE_ATTEMPTS
    assert seen[-1]["config_kwargs"]["connect_timeout"] == storage.S3_DEFAULTS["config_kwargs"]["connect_timeout"]
    # Retries the caller set are the caller's.
    with pytest.raises(storage.StorageError):
        storage.check_writable("s3://bucket/out", storage_options={"endpoint_url": f"http://127.0.0.1:{port}", "config_kwargs": {"retries": {"max_attempts": 1}}})
    assert seen[-1]["config_kwargs"] == {"retries": {"max_attempts": 1}}
    assert storage.S3_DEFAULTS["config_kwargs"]["retries"] == {"max_attempts": 8, "mode": "standard"}  # never rewritten by a use


@pytest.mark.parametrize("scheme", ["s3", "s3a"])
def test_a_feature_store_on_object_storage_is_read_by_either_s3_scheme_without_the_run_folders_below_it(s3, scheme):
    # s3a:// (Hadoop's name, common in data platforms) names the same bucket;
    # listing must give back URIs of the scheme given, or no table is found.
    from crossemo import featurestore

    store = f"{scheme}://{s3['bucket']}/out/features"
    for corpus in ("emovo", "ravdess"):
        frame = pd.DataFrame({"corpus": [corpus], "speaker": ["a"], "emotion": ["joy"], "f0": [1.0]})
        storage.write_frame(frame, storage.join(store, f"{corpus}.parquet"), storage_options=s3["storage_options"], metadata={featurestore.FEATURE_SET_KEY: "IS10"})
    # A deeper table (a run's cache) is not a corpus of the store.
    storage.write_frame(pd.DataFrame({"x": [1]}), storage.join(store, "cache", "deep.parquet"), storage_options=s3["storage_options"])
    tables = featurestore.load_features(store, storage_options=s3["storage_options"])
    assert sorted(tables) == ["emovo", "ravdess"]
    assert tables["ravdess"]["corpus"].tolist() == ["ravdess"]


def test_a_temporary_file_a_killed_writer_left_does_not_break_reading_the_folder(tmp_path, monkeypatch):
    # pandas.read_parquet(OUT/predictions) reads every file of the folder but
    # those whose names start with "." or "_": a visible leftover failed it.
    folder = tmp_path / "predictions"
    storage.write_frame(pd.DataFrame({"uri": ["a"]}), str(folder / "part-1.parquet"))

    def killed(source: str, target: str) -> None:
        raise KeyboardInterrupt  # between writing the temporary and renaming it

    monkeypatch.setattr(storage.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        storage.write_frame(pd.DataFrame({"uri": ["b"]}), str(folder / "part-2.parquet"))
    monkeypatch.undo()
    assert len(list(folder.iterdir())) == 2  # the leftover is there
    assert pd.read_parquet(folder)["uri"].tolist() == ["a"]


def test_a_file_is_called_damaged_only_for_errors_in_its_bytes(tmp_path):
    """Arrow's broken footer is an OSError without errno; s3fs's throttling (SlowDown) is an OSError with one: "remove it" would lose good labels."""
    damaged = tmp_path / "part.parquet"
    pd.DataFrame({"uri": ["a"]}).to_parquet(damaged)
    intact = damaged.read_bytes()
    damaged.write_bytes(intact[:-20] + bytes(range(12)) + intact[-8:])
    with pytest.raises(OSError) as broken:
        pq.read_schema(damaged)
    assert "remove it" in str(storage.unreadable("part", broken.value, remedy="remove it"))
    throttled = OSError(16, "Please reduce your request rate.")
    assert str(storage.unreadable("part", throttled, remedy="remove it")) == "part cannot be read (OSError: [Errno 16] Please reduce your request rate.)"


def test_entries_of_a_prefix_leave_out_its_folder_marker_and_hidden_probes(s3):
    """The AWS console's "Create folder" leaves the key ``prefix/``; a bucket refusing deletes keeps a write check's probe: neither occupies a folder."""
    client = boto3.client("s3", endpoint_url=s3["endpoint"], region_name="us-east-1")
    for key in ("models/mine/", f"models/mine/{storage.WRITE_CHECK_PREFIX}1", "models/taken/calls/2024/x.wav"):
        client.put_object(Bucket=s3["bucket"], Key=key, Body=b"")
    options = s3["storage_options"]
    assert storage.entries_in(f"s3://{s3['bucket']}/models/mine", storage_options=options) == []
    assert storage.entries_in(f"s3://{s3['bucket']}/models/taken", storage_options=options) == ["calls"]
    assert storage.entries_in(f"s3://{s3['bucket']}/models/absent", storage_options=options) == []
