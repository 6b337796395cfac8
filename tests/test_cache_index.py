"""The compact content index and the fingerprint index read and written a batch at a time."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from crossemo import featurestore, storage
from crossemo.contentindex import ContentIndex


def _key(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def test_the_index_finds_each_key_in_its_file_and_features_before_rejections():
    index = ContentIndex()
    index.add("c/a.parquet", [_key(n) for n in range(10)])
    index.add("c/a.rejected.parquet", [_key(n) for n in range(8, 12)])
    index.add("c/b.parquet", [_key(11)])
    wanted = [_key(0), _key(9), _key(10), _key(11), _key(99), ""]
    assert index.locate(wanted) == ["c/a.parquet", "c/a.parquet", "c/a.rejected.parquet", "c/b.parquet", "", ""]
    assert index.contains(wanted).tolist() == [True, True, True, True, False, False]
    assert _key(3) in index and _key(99) not in index and "" not in index and "not a key" not in index
    # Files added after a lookup are found too.
    index.add("c/c.parquet", [_key(99)])
    assert index.locate([_key(99)]) == ["c/c.parquet"]


def test_a_copy_of_the_index_answers_as_the_original():
    """Extraction tasks receive the index through Ray's object store (pickled)."""
    index = ContentIndex()
    index.add("c/a.parquet", [_key(n) for n in range(100)])
    copy = pickle.loads(pickle.dumps(index))
    assert copy.locate([_key(5), _key(500)]) == ["c/a.parquet", ""] and len(copy) == 100


def test_what_is_not_a_key_is_never_found():
    """A file not read has key ""; nothing else may pass for a key by being padded, cut or upper-cased."""
    index = ContentIndex()
    index.add("c/a.parquet", [_key(1), "", None, "01", "zz" * 32])
    assert index.locate([_key(1)]) == ["c/a.parquet"] and len(index) == 1
    index.add("c/b.parquet", [("01" + "00" * 31)])
    for other in ["", None, "01", _key(1) + "ff", _key(1).upper(), "zz" * 32]:
        assert other not in index and index.locate([other]) == [""], other


def test_contents_read_every_file_holding_a_wanted_key(tmp_path):
    """A content with features and a cached rejection gets both, as when the scan reads its files whole."""
    store = featurestore.FeatureStore(str(tmp_path))
    generation = featurestore.CacheGeneration("is10", "0", {})
    facts = pd.DataFrame({"sha256": [_key(1)], "sampling_rate": [16000], "channels": [1], "channel": ["0"], "duration": [1.0], "decode_notes": [""]})
    rejected = pd.DataFrame({"uri": ["x.wav", "y.wav"], "sha256": [_key(1), _key(2)], "stage": ["features", "decode"], "reason": ["non-finite", "empty"]})
    featurestore.write_cache_shard(store, generation, ["f1"], facts, [np.ones(1, dtype=np.float32)], rejected)
    cache = featurestore.FeatureCache.scan(store, generation, ["f1"])
    found, values, rejections = cache.contents({_key(1)})
    assert found.index.tolist() == [_key(1)] and values.shape == (1, 1)
    assert rejections["sha256"].tolist() == [_key(1)]
    assert cache.keys.files_holding([_key(2), _key(3)]) == {u for u in cache.keys.files_holding([_key(1)]) if u.endswith(".rejected.parquet")}


def _files(numbers: range, fingerprint: str = "1:1") -> pd.DataFrame:
    return pd.DataFrame({"uri": [f"/audio/{n}.wav" for n in numbers], "fingerprint": fingerprint, "sha256": [_key(n) for n in numbers]})


def test_the_fingerprint_index_learns_replaces_and_reads_back_over_many_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(featurestore, "FINGERPRINT_BATCH_ROWS", 7)  # many batches from a few rows
    store = featurestore.FeatureStore(str(tmp_path))
    first = _files(range(50))
    assert featurestore.known_keys(store, first).eq("").all()
    featurestore.update_fingerprints(store, first.iloc[:30])
    known = featurestore.known_keys(store, first)
    assert known.iloc[:30].tolist() == first["sha256"].iloc[:30].tolist() and known.iloc[30:].eq("").all()
    # A file whose content changed under the same fingerprint takes its new key; the rest are added.
    changed = first.iloc[25:].copy()
    changed.loc[changed.index[0], "sha256"] = _key(1000)
    featurestore.update_fingerprints(store, changed)
    index = storage.read_frame(store.fingerprints_uri)
    assert len(index) == 50 and not index.duplicated(["uri", "fingerprint"]).any()
    assert featurestore.known_keys(store, first.iloc[[25]]).tolist() == [_key(1000)]
    # Another fingerprint of a file is another entry; the unchanged file keeps its key.
    assert featurestore.known_keys(store, _files(range(3), fingerprint="2:2")).eq("").all()


def test_an_index_written_by_earlier_versions_is_read_and_extended(tmp_path):
    """Earlier versions wrote the index through pandas, whose strings Arrow holds as large_string."""
    store = featurestore.FeatureStore(str(tmp_path))
    files = _files(range(10))
    storage.write_frame(files.astype("string"), store.fingerprints_uri)
    assert featurestore.known_keys(store, files).tolist() == files["sha256"].tolist()
    featurestore.update_fingerprints(store, _files(range(10, 12)))
    assert featurestore.known_keys(store, _files(range(12))).tolist() == _files(range(12))["sha256"].tolist()


def test_nothing_new_leaves_the_fingerprint_index_unwritten(tmp_path):
    store = featurestore.FeatureStore(str(tmp_path))
    files = _files(range(20))
    featurestore.update_fingerprints(store, files)
    path = tmp_path / "cache" / "fingerprints.parquet"
    before = path.stat().st_mtime_ns
    featurestore.update_fingerprints(store, files.iloc[5:])
    featurestore.update_fingerprints(store, files.assign(sha256=""))
    assert path.stat().st_mtime_ns == before


def test_a_failed_write_of_batches_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    uri = str(tmp_path / "index.parquet")
    schema = pa.schema([("uri", pa.string())])
    storage.write_batches(iter([pa.record_batch([pa.array(["a", "b"])], schema=schema)]), schema, uri)

    def failing():
        yield pa.record_batch([pa.array(["c"])], schema=schema)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        storage.write_batches(failing(), schema, uri)
    assert storage.read_frame(uri)["uri"].tolist() == ["a", "b"]
    assert [p.name for p in tmp_path.iterdir()] == ["index.parquet"]
