"""The whole pipeline on local Ray: features into the store, the protocol, the tables."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import ray
import soundfile as sf

from crossemo import featurestore, pipeline
from crossemo.labels import METADATA_COLUMNS
from crossemo.synthetic import make_demo_corpora

FAST = {name: {"n_estimators": 20} for name in ("rf", "multitask", "norm_neutral", "norm_distribution", "speaker_norm")}
FAST.update(fcnn={"epochs": 3, "finetune_epochs": 3}, dbn={"pretrain_epochs": 2, "finetune_epochs": 3})


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
    assert list(table.columns[:4]) == list(METADATA_COLUMNS)
    features = table.drop(columns=list(METADATA_COLUMNS))
    assert features.shape[1] == 1582
    assert all(dtype.kind == "f" for dtype in features.dtypes)
    assert np.isfinite(features.to_numpy()).all()
    assert first.extracted == 32 and first.reused == 0

    _, again, _ = pipeline.run(config_for(corpora_dir, out), evaluate=False)
    assert again.extracted == 0 and again.reused == 32
    pd.testing.assert_frame_equal(pd.read_parquet(out / "features"), table)

    # A new file is extracted alone; a renamed copy of known audio is not extracted at all.
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
    assert len(pd.read_parquet(out / "features")) == 34


def test_unreadable_file_is_rejected_and_the_run_goes_on(corpora_dir, tmp_path):
    studio = corpora_dir["synth_studio"]
    (studio.parent / "s01" / "broken.wav").write_text("this is not audio")
    manifest = pd.read_csv(studio)
    pd.concat([manifest, pd.DataFrame({"path": ["s01/broken.wav"], "speaker": ["s01"], "emotion": ["anger"]})]).to_csv(studio, index=False)
    out = tmp_path / "out"
    _, summary, _ = pipeline.run(config_for(corpora_dir, out), evaluate=False)
    rejected = pd.read_parquet(out / "features" / "_rejected.parquet")
    assert rejected["uri"].str.endswith("broken.wav").sum() == 1
    assert rejected.loc[rejected["uri"].str.endswith("broken.wav"), "stage"].item() == "decode"
    assert len(pd.read_parquet(out / "features")) == 32


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


def test_features_on_s3_equal_local(corpora_dir, tmp_path, s3):
    local = tmp_path / "out"
    pipeline.run(config_for(corpora_dir, local), evaluate=False)
    remote = f"s3://{s3['bucket']}/runs/out"
    pipeline.run(config_for(corpora_dir, remote, storage_options=s3["storage_options"]), evaluate=False)
    theirs = featurestore.load_features(f"{remote}/features", storage_options=s3["storage_options"])
    ours = featurestore.load_features(str(local / "features"))
    for corpus, frame in ours.items():
        pd.testing.assert_frame_equal(theirs[corpus], frame)
