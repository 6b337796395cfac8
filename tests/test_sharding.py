"""How extraction is cut into shards and run on Ray, and re-runs that need no Ray at all."""

from __future__ import annotations

import itertools
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray

from crossemo import audio, cli, corpora, featurestore, inputs, orchestration, pipeline, storage
from crossemo.features import FeatureExtractor
from crossemo.synthetic import make_demo_corpora


@pytest.fixture(scope="module")
def listing(shared_corpora) -> pd.DataFrame:
    """``uri`` and ``fingerprint`` of every real EMOVO and RAVDESS file."""
    manifests = [corpora.prepare("emovo", str(shared_corpora / "emovo")), corpora.prepare("ravdess", str(shared_corpora / "ravdess"))]
    return pd.concat([m.utterances[["uri", "fingerprint"]] for m in manifests], ignore_index=True)


def test_shards_hold_every_file_once_largest_first_and_shrink_to_the_end(listing):
    shards = featurestore.shard(listing, workers=2)
    together = pd.concat(shards, ignore_index=True)
    assert sorted(together["uri"]) == sorted(listing["uri"])
    assert featurestore.file_sizes(together["fingerprint"]).is_monotonic_decreasing
    lengths = [len(s) for s in shards]
    assert lengths[0] == 64 and lengths[-1] <= 2, lengths
    # Once below the largest size, every shard holds fewer bytes than the one before.
    shrinking = [featurestore.file_sizes(s["fingerprint"]).sum() for s in shards if len(s) < 64]
    assert len(shrinking) >= 5 and all(later < earlier for earlier, later in itertools.pairwise(shrinking)), shrinking


def test_files_of_equal_size_share_a_shard_and_only_split_ones_may_repeat(listing):
    sizes = featurestore.file_sizes(listing["fingerprint"])
    pairs = listing[sizes.duplicated(keep=False)]
    assert len(pairs) == 6  # the real corpora hold three pairs of equally large files
    shards = featurestore.shard(listing, workers=2)
    shard_of = {uri: index for index, s in enumerate(shards) for uri in s["uri"]}
    for _, pair in pairs.groupby(featurestore.file_sizes(pairs["fingerprint"])):
        assert len({shard_of[uri] for uri in pair["uri"]}) == 1
    assert not pd.concat(shards)["may_repeat"].any()

    one_file_each = pd.concat(featurestore.shard(listing, workers=2, max_size=1), ignore_index=True)
    assert set(one_file_each.loc[one_file_each["may_repeat"], "uri"]) == set(pairs["uri"])

    unknown = listing.head(4).assign(fingerprint=":")
    assert pd.concat(featurestore.shard(unknown, workers=2))["may_repeat"].all()


def test_files_of_one_size_are_still_spread_over_the_workers(tmp_path):
    demo = make_demo_corpora(tmp_path, speakers=2, per_emotion=2)
    manifest = corpora.prepare("manifest", str(demo["synth_studio"]))
    files = manifest.utterances[["uri", "fingerprint"]]
    assert featurestore.file_sizes(files["fingerprint"]).nunique() == 1  # equally long WAV files
    shards = featurestore.shard(files, workers=2)
    assert len(shards) >= 4 and max(len(s) for s in shards) <= len(files) / 2
    assert pd.concat(shards)["may_repeat"].all()


def test_run_sharded_gives_outcomes_and_timings_in_the_order_of_the_shards(listing, local_ray):
    shards = featurestore.shard(listing, workers=2)
    run = orchestration.run_sharded(len, shards, desc="lengths", progress=False)
    assert run.outcomes == [len(s) for s in shards]
    assert [t.shard for t in run.timings] == list(range(len(shards)))
    assert [t.items for t in run.timings] == [len(s) for s in shards]
    assert all(t.started <= t.finished for t in run.timings)
    with pytest.raises(TypeError):
        orchestration.run_sharded(int, shards[:1], desc="broken", progress=False)


def test_identical_files_in_different_shards_are_extracted_once(tmp_path, shared_corpora, local_ray):
    """70 copies of one recording: more than a shard holds, so the shards must agree which one extracts it."""
    source = next((shared_corpora / "ravdess" / "Actor_01").glob("*.flac"))
    folder = tmp_path / "copies"
    folder.mkdir()
    for index in range(70):
        shutil.copy(source, folder / f"take{index:02d}.flac")
    (folder / "manifest.csv").write_text("path,speaker,emotion\n" + "".join(f"take{index:02d}.flac,anna,neutral\n" for index in range(70)))
    manifest = corpora.prepare("manifest", str(folder / "manifest.csv"))
    summary = orchestration.extract_features([manifest], featurestore.FeatureStore(str(tmp_path / "out")), progress=False)
    assert summary.extracted == 1 and len(summary.timings) >= 2
    assert len(summary.features["manifest"]) == 1
    assert (summary.rejected["stage"] == "duplicate").sum() == 69


def test_a_shard_claims_its_files_in_batches_and_extracts_only_what_it_owns(tmp_path):
    """One claims round trip per file cost a quarter of the wall time on files of one size; a batch asks for many keys at once."""
    manifests = make_demo_corpora(tmp_path / "corpora", speakers=1, per_emotion=5, seconds=0.5)
    files = inputs.list_inputs([str(manifests["synth_studio"].parent)]).files
    assert len(files) == 20 and files["fingerprint"].str.split(":").str[0].nunique() == 1  # one size: every file may repeat
    keys = {uri: featurestore.content_key(Path(uri).read_bytes()) for uri in files["uri"]}
    elsewhere = set(list(keys.values())[:5])  # another shard claimed these first
    asked: list[list[str]] = []

    def claim(batch: list[str]) -> list[bool]:
        asked.append(batch)
        return [key not in elsewhere for key in batch]

    outcome = featurestore.extract_shard(
        files.assign(may_repeat=True), extractor=FeatureExtractor("is10"), store=featurestore.FeatureStore(str(tmp_path / "store")), claim=claim,
    )
    assert [len(batch) for batch in asked] == [featurestore.CLAIM_BATCH_FILES, 20 - featurestore.CLAIM_BATCH_FILES]
    assert sorted(key for batch in asked for key in batch) == sorted(keys.values())
    # Extracted (or rejected at decode, as a steady tone can be) exactly the 15 it owns; every file's key is known.
    assert outcome.extracted + len(outcome.rejected) == 15 and not elsewhere & set(outcome.rejected["sha256"])
    assert set(outcome.keys["sha256"]) == set(keys.values())


def test_a_copy_of_a_cached_recording_counts_as_reused(tmp_path, shared_corpora, local_ray):
    """Found in the cache by its content, not its name: not extracted, and counted as reused."""
    recordings = sorted((shared_corpora / "emovo" / "f1").glob("*.flac"))[:3]
    extractor, settings = FeatureExtractor("is10"), audio.AnalysisSettings()
    generation = featurestore.CacheGeneration.of(extractor, settings)
    store = featurestore.FeatureStore(str(tmp_path / "store"))
    counts = []
    for name in ("first", "copies"):
        (tmp_path / name).mkdir()
        for path in recordings:
            shutil.copy(path, tmp_path / name / path.name)
        files = inputs.list_inputs([str(tmp_path / name)]).files
        extraction = orchestration.extract_files(files, store, extractor=extractor, settings=settings, generation=generation, read_features=False, progress=False)
        counts.append((extraction.extracted, extraction.reused))
    assert counts == [(3, 0), (0, 3)]


def _files(out: Path) -> dict[str, bytes]:
    """Every file a run leaves, by path, except the run records and the page (both name the run)."""
    return {
        str(path.relative_to(out)): path.read_bytes() for path in sorted(out.rglob("*"))
        if path.is_file() and path.parts[len(out.parts)] != "runs" and path.name != "index.html"
    }


@pytest.mark.parametrize("relative", [False, True], ids=["absolute out", "relative out"])
def test_a_rerun_with_everything_done_starts_no_ray_and_writes_the_same_bytes(tmp_path, monkeypatch, capsys, relative):
    demo = make_demo_corpora(tmp_path / "corpora", speakers=2, per_emotion=1)
    monkeypatch.chdir(tmp_path)  # a relative --out names what an absolute one does
    out = "out" if relative else str(tmp_path / "out")
    config = pipeline.RunConfig(
        out=out, corpora=[pipeline.CorpusSpec(recipe="manifest", uri=str(path)) for path in demo.values()],
        methods="rf", method_params={"rf": {"n_estimators": 10}}, progress=False,
    )
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        first, _, _ = pipeline.run(config)
    finally:
        ray.shutdown()
    written = _files(tmp_path / "out")

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started although everything was done")

    monkeypatch.setattr(ray, "init", refuse)
    again, extraction, _ = pipeline.run(config)
    assert not ray.is_initialized()
    assert extraction.extracted == 0 and extraction.startup_seconds == 0 and not extraction.timings
    assert _files(tmp_path / "out") == written
    assert again.counts == {**first.counts, "extracted": 0, "features_reused": first.counts["extracted"], "tasks_reused": first.counts["tasks"], "fits": 0}
    def unchanged(record: pipeline.RunRecord) -> dict:
        return {key: value for key, value in asdict(record).items() if key not in ("run_id", "started", "timings", "counts")}

    assert unchanged(again) == unchanged(first)

    settings = tmp_path / "rf.toml"
    settings.write_text('methods = "rf"\n[method_params.rf]\nn_estimators = 10\n')
    status = cli.main(["evaluate", "--features", os.path.join(out, "features"), "--out", out, "--config", str(settings), "--no-progress"])
    assert status == 0 and not ray.is_initialized()
    assert "Table 2" in capsys.readouterr().out


def test_cache_files_of_the_older_layout_are_read(tmp_path, local_ray):
    """A cache written before the features were packed into one column (a column per feature) is reused as it is."""
    demo = make_demo_corpora(tmp_path / "corpora", speakers=2, per_emotion=1)
    manifests = [corpora.prepare("manifest", str(path)) for path in demo.values()]
    store = featurestore.FeatureStore(str(tmp_path / "out"))
    first = orchestration.extract_features(manifests, store, progress=False)
    written = _files(tmp_path / "out" / "features")
    packed = [uri for uri in storage.list_files(store.cache_uri(first.generation), suffix=".parquet") if not uri.endswith(".rejected.parquet")]
    assert packed
    for uri in packed:
        table = storage.read_table(uri)
        names = first.features["synth_studio"].columns[5:].tolist()
        values = np.asarray(table.column("features").combine_chunks().flatten()).reshape(table.num_rows, len(names))
        wide = pd.concat([table.drop_columns(["features"]).to_pandas(), pd.DataFrame(values, columns=names)], axis=1)
        metadata = {featurestore.FEATURE_SET_KEY: first.generation.feature_set_id, featurestore.GENERATION_KEY: first.generation.id}
        storage.write_frame(wide, uri, metadata=metadata)
        assert "features" not in storage.read_table(uri).column_names
    again = orchestration.extract_features(manifests, store, progress=False)
    assert again.extracted == 0 and again.reused == first.extracted
    assert _files(tmp_path / "out" / "features") == written


def test_labelling_extraction_sends_the_driver_content_keys_only(tmp_path, shared_corpora):
    """Without ``return_features`` a shard hands back which contents each cache file holds, not its features or their 1582 names."""
    files = pd.DataFrame({"uri": [str(p) for p in sorted((shared_corpora / "emovo" / "f1").glob("*.flac"))[:3]]})
    files["fingerprint"] = ""
    extractor, settings = FeatureExtractor("is10"), audio.AnalysisSettings()
    generation = featurestore.CacheGeneration.of(extractor, settings)
    store = featurestore.FeatureStore(str(tmp_path / "out"))
    keys_only = orchestration._extract_shard(files, extractor, settings, generation, store, frozenset(), None, False)
    assert keys_only.extracted == 3 and keys_only.cache_tables
    for table in keys_only.cache_tables.values():
        assert table.column_names == ["sha256"] and not table.schema.metadata
    # The same shard read back for the feature store carries everything.
    whole = orchestration._extract_shard(files, extractor, settings, generation, featurestore.FeatureStore(str(tmp_path / "again")), frozenset(), None, True)
    assert all("features" in table.column_names for uri, table in whole.cache_tables.items() if not uri.endswith(".rejected.parquet"))
