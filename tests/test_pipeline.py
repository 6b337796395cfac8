"""The whole pipeline on local Ray: features into the store, the protocol, the tables."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import ray
import soundfile as sf

from crossemo import cli, featurestore, methods, orchestration, pipeline, protocol, storage
from crossemo.labels import EMOTIONS, METADATA_COLUMNS
from crossemo.synthetic import make_demo_corpora

FAST = {name: {"n_estimators": 20} for name in ("rf", "multitask", "norm_neutral", "norm_distribution", "speaker_norm")}
FAST.update(fcnn={"epochs": 3, "finetune_epochs": 3}, dbn={"pretrain_epochs": 2, "finetune_epochs": 3}, dann={"epochs": 3})


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture
def corpora_dir(tmp_path):
    return make_demo_corpora(tmp_path / "corpora", speakers=2, per_emotion=2)


def config_for(manifests, out, **settings) -> pipeline.RunConfig:
    specs = [pipeline.CorpusSpec(recipe="manifest", uri=str(path)) for path in manifests.values()]
    return pipeline.RunConfig(out=str(out), corpora=specs, progress=False, **settings)


def test_features_are_cached_by_content(corpora_dir, tmp_path):
    out = tmp_path / "out"
    record, first, _ = pipeline.run(config_for(corpora_dir, out), evaluate=False)
    table = pd.read_parquet(out / "features")
    assert len(table) == 2 * 2 * 4 * 2
    assert list(table.columns[: len(METADATA_COLUMNS)]) == list(METADATA_COLUMNS)
    features = table.drop(columns=list(METADATA_COLUMNS))
    assert features.shape[1] == 1582
    assert all(dtype.kind == "f" for dtype in features.dtypes)
    assert np.isfinite(features.to_numpy()).all()
    # The run's folder given for its store: its cache files were read as "corpora" of many feature sets, in a 33,000-character line.
    with pytest.raises(storage.StorageError, match=rf"^no feature tables under {out}: it is a run's output folder; its feature store is {out}/features$"):
        featurestore.load_features(str(out))
    assert first.extracted == 32 and first.reused == 0

    _, again, _ = pipeline.run(config_for(corpora_dir, out), evaluate=False)
    assert again.extracted == 0 and again.reused == 32
    pd.testing.assert_frame_equal(pd.read_parquet(out / "features"), table)

    # A new file is extracted alone; a renamed copy of known audio is not
    # extracted at all, and as an exact copy (same speaker and emotion) it is kept once.
    studio = corpora_dir["synth_studio"]
    folder = studio.parent
    shutil.copy(folder / "s01" / "joy_00.wav", folder / "s01" / "joy_copy.wav")
    signal, rate = sf.read(folder / "s01" / "joy_01.wav")
    sf.write(folder / "s01" / "joy_new.wav", signal[::-1].copy(), rate)
    manifest = pd.read_csv(studio)
    extra = pd.DataFrame({"path": ["s01/joy_copy.wav", "s01/joy_new.wav"], "speaker": ["s01", "s01"], "emotion": ["joy", "joy"]})
    pd.concat([manifest, extra]).to_csv(studio, index=False)
    _, grown, _ = pipeline.run(config_for(corpora_dir, out), evaluate=False)
    assert grown.extracted == 1
    assert len(pd.read_parquet(out / "features")) == 33
    rejected = pd.read_parquet(out / "features" / "_rejected.parquet")
    assert rejected[["stage", "reason"]].values.tolist() == [["duplicate", f"exact copy of {folder / 's01' / 'joy_00.wav'} (kept once)"]]
    assert sorted(pd.read_parquet(out / "features" / "_duplicates.parquet")["action"]) == ["kept", "rejected: exact copy"]


def test_the_duplicates_warning_points_to_a_file_only_when_it_was_written():
    kept = pd.DataFrame(columns=["corpus", "sampling_rate", "decode_notes", "uri"])
    duplicates = pd.DataFrame({"group": [1, 1], "action": ["kept", "rejected: exact copy"]})
    (written,) = featurestore.audio_warnings(kept, duplicates, analysis_rate=16000)
    (not_written,) = featurestore.audio_warnings(kept, duplicates, analysis_rate=16000, written=False)
    assert written.endswith("see features/_duplicates.parquet")
    assert "see features/_duplicates.parquet" not in not_written and not_written.endswith("`crossemo features` on these corpora lists them in features/_duplicates.parquet")


def write_bad_files(folder) -> dict[str, str]:
    """Real broken files of every kind, by name, with the stage that must reject them."""
    rate = 16000
    good = (0.3 * np.sin(np.arange(rate) * 2 * np.pi * 220 / rate)).astype(np.float32)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "text.wav").write_text("this is not audio")
    sf.write(folder / "whole.wav", good, rate, subtype="PCM_16")
    data = (folder / "whole.wav").read_bytes()
    (folder / "header_cut.wav").write_bytes(data[:30])
    (folder / "data_cut.wav").write_bytes(data[: len(data) // 2])
    sf.write(folder / "silence.wav", np.zeros(rate, np.float32), rate, subtype="PCM_16")
    sf.write(folder / "blip.wav", good[:160], rate, subtype="PCM_16")
    nan = good.copy()
    nan[100] = np.nan
    sf.write(folder / "nan.wav", nan, rate, subtype="FLOAT")
    (folder / "whole.wav").unlink()
    return {name: "decode" for name in ("empty", "text", "header_cut", "data_cut", "silence", "blip", "nan")}


def test_every_file_is_accounted_for_and_bad_ones_do_not_stop_the_run(corpora_dir, tmp_path):
    studio = corpora_dir["synth_studio"]
    expected = write_bad_files(studio.parent / "s01")
    manifest = pd.read_csv(studio)
    bad = pd.DataFrame({"path": [f"s01/{name}.wav" for name in expected], "speaker": "s01", "emotion": "anger"})
    shutil.copy(studio.parent / "s01" / "neutral_00.wav", studio.parent / "s01" / "bored.wav")
    other = pd.DataFrame({"path": ["s01/bored.wav"], "speaker": ["s01"], "emotion": ["boredom"]})
    pd.concat([manifest, bad, other]).to_csv(studio, index=False)
    out = tmp_path / "out"
    _, summary, _ = pipeline.run(config_for(corpora_dir, out), evaluate=False)
    rejected = pd.read_parquet(out / "features" / "_rejected.parquet")
    features = pd.read_parquet(out / "features")
    listed = sum(len(pd.read_csv(path)) for path in corpora_dir.values())
    assert len(features) + len(rejected) == listed
    by_name = {uri.rsplit("/", 1)[-1].removesuffix(".wav"): row for uri, row in zip(rejected["uri"], rejected.itertuples())}
    for name, stage in expected.items():
        assert by_name[name].stage == stage, name
        assert by_name[name].reason, name
    assert by_name["bored"].stage == "recipe" and "boredom" in by_name["bored"].reason
    assert len(features) == 32 and np.isfinite(features.drop(columns=list(METADATA_COLUMNS)).to_numpy()).all()
    # a re-run reports the same rejections from the cache without decoding again
    _, again, _ = pipeline.run(config_for(corpora_dir, out), evaluate=False)
    assert again.extracted == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "features" / "_rejected.parquet").sort_values("uri", ignore_index=True), rejected.sort_values("uri", ignore_index=True))


def test_whole_protocol_fills_every_table_and_is_reproducible(corpora_dir, tmp_path):
    out = tmp_path / "out"
    config = config_for(corpora_dir, out, method_params=FAST)
    record, _, tables = pipeline.run(config)
    for name in ("table2", "table3", "table2_uar", "table3_uar"):
        table = pd.read_csv(out / "report" / f"{name}.csv")
        assert len(table) == 2
        assert not table.isna().any().any(), name
    assert (out / "report" / "tables.md").read_text().count("## Table") == 4
    assert record.counts["tasks_reused"] == 0
    # the fcnn's source network trains once per source corpus, not once per fold
    assert record.counts["fits"] == record.counts["tasks"] + 2

    rerun, _, again = pipeline.run(config)
    assert rerun.counts["tasks_reused"] == rerun.counts["tasks"]
    for name, table in tables.items():
        pd.testing.assert_frame_equal(again[name], table)

    fresh = tmp_path / "fresh"
    _, _, recomputed = pipeline.run(config_for(corpora_dir, fresh, method_params=FAST))
    for name, table in tables.items():
        pd.testing.assert_frame_equal(recomputed[name], table)


@pytest.mark.parametrize(
    ("error", "stopped"),
    [(RuntimeError("a task failed: worker died\nits traceback"), "failed: RuntimeError: a task failed: worker died"), (KeyboardInterrupt(), "interrupted by SIGINT")],
)
def test_a_run_that_fails_or_is_interrupted_while_evaluating_is_recorded_with_why(corpora_dir, tmp_path, monkeypatch, error, stopped):
    # A scheduled run that crashed left runs/<id>/ without run.json: no record, and an id `report --compare` did not know.
    def evaluate(*args, **kwargs):
        raise error

    monkeypatch.setattr(orchestration, "evaluate", evaluate)
    monkeypatch.setattr(orchestration, "_received_signal", None)  # what an earlier test's SIGTERM left in this process
    out = tmp_path / "out"
    with pytest.raises(type(error)):
        pipeline.run(config_for(corpora_dir, out, methods="rf", method_params=FAST))
    records = list((out / "runs").glob("*/run.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["stopped"] == stopped
    assert record["counts"]["utterances"] == 2 * 2 * 4 * 2 and not record["result_uris"] and "total_wall_seconds" in record["timings"]
    # A comparison with it says why it has no results.
    with pytest.raises(pipeline.ConfigError, match=rf"^run {record['run_id']} has no results to compare \(it stopped: {stopped}\)$"):
        cli.command_report(cli.build_parser().parse_args(["report", str(out), "--compare", record["run_id"], record["run_id"]]))


def test_features_on_s3_equal_local(corpora_dir, tmp_path, s3):
    local = tmp_path / "out"
    pipeline.run(config_for(corpora_dir, local), evaluate=False)
    remote = f"s3://{s3['bucket']}/runs/out"
    pipeline.run(config_for(corpora_dir, remote, storage_options=s3["storage_options"]), evaluate=False)
    theirs = featurestore.load_features(f"{remote}/features", storage_options=s3["storage_options"])
    ours = featurestore.load_features(str(local / "features"))
    for corpus, frame in ours.items():
        pd.testing.assert_frame_equal(theirs[corpus], frame)


def test_a_changed_decode_rule_or_opensmile_version_never_reuses_features(corpora_dir, tmp_path, monkeypatch):
    import json

    import opensmile

    out = tmp_path / "out"
    first, _, _ = pipeline.run(config_for(corpora_dir, out), evaluate=False)
    generation = first.cache_generation
    assert generation["opensmile"] == opensmile.__version__ and generation["decode"]["analysis_rate"] == 16000
    recorded = json.loads((out / "runs" / first.run_id / "run.json").read_text())
    assert recorded["cache_generation"]["id"] == generation["id"]
    for change in ({"analysis_rate": 22050}, {"channel": "first"}):
        record, summary, _ = pipeline.run(config_for(corpora_dir, out, **change), evaluate=False)
        assert (summary.extracted, summary.reused) == (32, 0), change
        assert record.cache_generation["id"] != generation["id"]
    monkeypatch.setattr(opensmile, "__version__", "99.0.0")
    record, summary, _ = pipeline.run(config_for(corpora_dir, out), evaluate=False)
    assert (summary.extracted, summary.reused) == (32, 0) and record.cache_generation["opensmile"] == "99.0.0"
    monkeypatch.undo()
    _, summary, _ = pipeline.run(config_for(corpora_dir, out), evaluate=False)
    assert (summary.extracted, summary.reused) == (0, 32)


def test_the_channel_rule_reaches_the_config_the_records_the_cache_and_the_manifest(corpora_dir, tmp_path, capsys):
    import json

    from crossemo import cli

    # Every studio file becomes stereo with the louder copy on channel 1.
    for path in sorted(corpora_dir["synth_studio"].parent.rglob("*.wav")):
        signal, rate = sf.read(path, dtype="float32")
        sf.write(path, np.stack([0.3 * signal, signal], axis=1), rate, subtype="PCM_16")
    corpus_flags = [flag for path in corpora_dir.values() for flag in ("--corpus", f"manifest={path}")]

    def parse(*flags: str) -> pipeline.RunConfig:
        return cli.config_from(cli.build_parser().parse_args(["features", *corpus_flags, "--out", str(tmp_path / "x"), *flags]))

    assert parse().channel == "mean"
    assert [parse("--channel", text).channel for text in ("first", "mean", "1", "-1")] == ["first", "mean", 1, -1]
    config_file = tmp_path / "channel.toml"
    config_file.write_text('channel = "first"\n')
    assert pipeline.RunConfig.from_toml(str(config_file)).channel == "first"
    config_file.write_text("channel = 1\n")
    assert pipeline.RunConfig.from_toml(str(config_file)).channel == 1

    def with_config(*flags: str) -> pipeline.RunConfig:
        return cli.config_from(cli.build_parser().parse_args(["run", "--config", str(config_file), *corpus_flags, "--out", str(tmp_path / "x"), *flags]))

    assert with_config().channel == 1 and with_config("--channel", "mean").channel == "mean"

    out = tmp_path / "out"
    kept = {}
    for rule in ("loudest", "mean", "first"):
        record, summary, _ = pipeline.run(config_for(corpora_dir, out, channel=rule), evaluate=False)
        assert summary.extracted == 32 and record.settings["channel"] == rule and record.cache_generation["decode"]["channel"] == rule
        written = json.loads((out / "runs" / record.run_id / "run.json").read_text())
        assert written["settings"]["channel"] == rule and written["cache_generation"]["decode"]["channel"] == rule
        manifest = pd.read_parquet(out / "features" / "_manifest.parquet")
        kept[rule] = manifest.groupby("corpus")["channel"].unique().map(sorted).to_dict()
    assert kept["loudest"] == {"synth_studio": ["1"], "synth_phone": ["0"]}
    assert kept["mean"] == {"synth_studio": ["mean"], "synth_phone": ["0"]}
    assert kept["first"] == {"synth_studio": ["0"], "synth_phone": ["0"]}

    # Evaluating the store (made with "first") records the store's rule, not the settings' default.
    evaluated = tmp_path / "evaluated"
    assert cli.main(["evaluate", "--features", str(out / "features"), "--out", str(evaluated), "--methods", "rf", "--no-progress"]) == 0
    capsys.readouterr()
    (run_json,) = (evaluated / "runs").glob("*/run.json")
    written = json.loads(run_json.read_text())
    assert written["settings"]["channel"] == "first" and written["settings"]["analysis_rate"] == 16000
    assert written["cache_generation"]["id"] == record.cache_generation["id"] and written["cache_generation"]["decode"]["channel"] == "first"


def test_a_store_reused_with_other_corpora_describes_only_this_run(corpora_dir, tmp_path):
    out = tmp_path / "out"
    studio, phone = (pipeline.CorpusSpec(recipe="manifest", uri=str(corpora_dir[name])) for name in ("synth_studio", "synth_phone"))
    pipeline.run(pipeline.RunConfig(out=str(out), corpora=[studio], progress=False), evaluate=False)
    deeper = out / "features" / "notes" / "kept.parquet"  # not a table of the store: a removal would lose someone's file
    deeper.parent.mkdir()
    pd.DataFrame({"x": [1]}).to_parquet(deeper)
    record, summary, _ = pipeline.run(pipeline.RunConfig(out=str(out), corpora=[phone], progress=False), evaluate=False)
    assert sorted(path.name for path in (out / "features").glob("[!_]*.parquet")) == ["synth_phone.parquet"]
    assert deeper.exists() and not any("kept" in warning for warning in record.warnings)
    assert "removed features/synth_studio.parquet, left by an earlier run with other corpora (its features stay in the cache)" in record.warnings


def test_a_multi_source_pair_trains_on_the_union_and_has_its_own_rows(corpora_dir, tmp_path):
    """``a+b:c``: the source is two corpora pooled; Tables 2 and 3, the page and the verdict get a row for it."""
    other = make_demo_corpora(tmp_path / "other", speakers=2, per_emotion=2, seed=7)
    third = other["synth_studio"].with_name("third.csv")
    shutil.copy(other["synth_studio"], third)
    manifests = {**corpora_dir, "third": third}
    out = tmp_path / "out"
    config = config_for(manifests, out, pairs="third+synth_studio:synth_phone", methods=methods.RECOMMENDED, method_params=FAST)
    record, extraction, tables = pipeline.run(config)
    assert record.pairs == [["synth_studio+third", "synth_phone"]]
    for name in ("table2", "table3_uar", "verdict"):
        assert list(zip(tables[name]["source"], tables[name]["target"])) == [("synth_studio+third", "synth_phone")], name
    assert set(pd.read_csv(out / "report" / "verdict.csv")["source"]) == {"synth_studio+third"}
    results = pipeline.read_results(record.result_uris, storage_options=None)
    # The files the Ray tasks wrote carry every emotion's probability, the most probable being the prediction.
    probabilities = results[protocol.PROBABILITY_COLUMNS].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    recommended = (results["method"] == methods.RECOMMENDED).to_numpy()
    assert recommended.any()
    np.testing.assert_array_equal(np.array(EMOTIONS)[probabilities[recommended].argmax(axis=1)], results.loc[recommended, "predicted"])
    s1 = results[results["scenario"] == 1]
    sizes = {name: len(frame) for name, frame in extraction.features.items()}
    assert s1["n_train"].iloc[0] == sizes["synth_studio"] + sizes["third"]
    assert "synth_studio+third → synth_phone" in (out / "report" / "index.html").read_text()


@pytest.mark.parametrize("address", [None, "local"])
def test_an_in_process_cluster_uses_a_token_without_rays_notice_of_it(address):
    """Ray's notice that it turned token authentication on was the first line of every run; the token itself stays on."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_AUTH") and key != "RAY_ADDRESS"}
    if address:
        env["RAY_ADDRESS"] = address
    code = "import os; from crossemo import orchestration; orchestration.connect(num_cpus=1); print(os.environ.get('RAY_AUTH_MODE'))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "token"
    assert orchestration.TOKEN_NOTICE not in done.stderr, done.stderr
