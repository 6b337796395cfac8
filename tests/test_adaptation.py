"""The adaptation methods beyond the study, and the contract that lets them see the test audio but never its labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sklearn

from crossemo import protocol
from crossemo.labels import EMOTIONS
from crossemo.methods import METHODS, Coral, KMMReweight, SelfTraining, SpeakerNormLinear, SubspaceAlignment
from crossemo.methods._common import target_weights
from crossemo.methods.speaker_norm import speaker_zscore
from tests.test_methods import FAST, fit, make_domains


@pytest.fixture(scope="module")
def domains():
    return make_domains(1)


def tiny_pair(seed: int = 0) -> dict[str, protocol.Dataset]:
    """A source of 3 speakers and a target of 3, 8 utterances per emotion and speaker, as feature tables."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (len(EMOTIONS), 6))
    rows = [
        {"corpus": corpus, "speaker": f"s{k}", "emotion": e, "uri": f"{corpus}/s{k}/{e}{n}", "sha256": f"{corpus}{k}{e}{n}",
         **{f"f{d}": v for d, v in enumerate(centres[i] * (1 + (corpus == "target")) + rng.normal(0, 1, 6))}}
        for corpus in ("source", "target") for k in range(3) for i, e in enumerate(EMOTIONS) for n in range(8)
    ]
    frame = pd.DataFrame(rows)
    return {name: protocol.Dataset.from_frame(frame[frame["corpus"] == name]) for name in ("source", "target")}


@pytest.mark.parametrize("name", [m for m in METHODS if m != "majority"])
def test_no_method_can_reach_a_test_label(name):
    """Permuting the test speakers' labels changes no prediction: they never reach fit or predict."""
    datasets = tiny_pair()
    target = datasets["target"]
    held_out = target.speakers != "target/s0"
    shuffled_y = target.y.copy()
    shuffled_y[held_out] = np.random.default_rng(1).permutation(target.y[held_out])
    shuffled = protocol.Dataset(target.corpus, target.X, shuffled_y, target.speakers, target.uris, target.content, target.digest)
    scenario = 2 if name in protocol.TARGET_ONLY_METHODS and name != "speaker_norm" else 3
    params = tuple(sorted(FAST.get(name, {}).items()))
    task = protocol.Task(scenario, name, "source" if scenario == 3 else None, "target", "target/s0", params)
    shared = protocol.SHARED_PREPARATIONS[name](datasets["source"], seed=0, params=params) if name in protocol.SHARED_PREPARATIONS else None
    source = datasets["source"] if scenario == 3 else None
    first = protocol.run_task(task, source, target, shared_model=shared)
    second = protocol.run_task(task, source, shuffled, shared_model=shared)
    np.testing.assert_array_equal(first["predicted"].to_numpy(), second["predicted"].to_numpy())
    train, test = protocol.split(task, source, target)
    assert "y" in test and not set(map(tuple, train["X"].tolist())) & set(map(tuple, test["X"].tolist()))


@pytest.mark.parametrize("name", ["rf", "dbn", "fcnn", "multitask", "norm_neutral", "norm_distribution", "speaker_norm"])
def test_study_methods_give_the_same_results_with_metadata_routing_on(name):
    """Importing skada turns on scikit-learn's metadata routing globally; the study's methods must not notice."""
    datasets = tiny_pair(2)
    params = tuple(sorted(FAST.get(name, {}).items()))
    task = protocol.Task(3, name, "source", "target", "target/s1", params)
    shared = protocol.SHARED_PREPARATIONS[name](datasets["source"], seed=0, params=params) if name in protocol.SHARED_PREPARATIONS else None
    results = []
    for routing in (False, True):
        with sklearn.config_context(enable_metadata_routing=routing):
            results.append(protocol.run_task(task, datasets["source"], datasets["target"], shared_model=shared))
    columns = ["uri", "predicted", "accuracy", "uar"]
    pd.testing.assert_frame_equal(results[0][columns], results[1][columns])


def test_target_weights_give_the_target_speaker_the_source_total():
    is_target = np.array([False] * 30 + [True] * 5)
    weights = target_weights(is_target, target_share=0.5)
    assert weights[~is_target].sum() == pytest.approx(30) and weights[is_target].sum() == pytest.approx(30)
    assert target_weights(is_target, target_share=0.25)[is_target].sum() == pytest.approx(10)
    np.testing.assert_array_equal(target_weights(np.ones(4, bool), target_share=0.5), np.ones(4))
    with pytest.raises(ValueError, match="target_share"):
        target_weights(is_target, target_share=1.0)


def test_speaker_norm_linear_probabilities_are_in_class_order(domains):
    train, test = domains
    model = fit(SpeakerNormLinear(), train, test)
    probabilities = model.predict_proba(test["X"], speakers=test["speakers"])
    assert probabilities.shape == (len(test["X"]), len(model.classes_))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.classes_[probabilities.argmax(axis=1)], model.predict(test["X"], speakers=test["speakers"]))
    assert list(model.classes_) == [e for e in EMOTIONS if e in set(train["y"])]


def test_coral_gives_the_source_the_targets_covariance():
    """After CORAL the source rows' covariance is (close to) the target's, and the target rows are only centred."""
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(5, 5))
    source = rng.normal(size=(400, 5))
    target = rng.normal(size=(400, 5)) @ mixing
    X = np.vstack([source, target])
    model = Coral(reg=1e-6)
    is_target = np.r_[np.zeros(400, bool), np.ones(400, bool)]
    adapted, _ = model._adapt(X, np.array(["neutral"] * 800), is_target, np.ones(800), np.empty((0, 5)))
    np.testing.assert_allclose(adapted[is_target], target - target.mean(axis=0))
    target_cov = np.cov(target, rowvar=False)
    assert np.abs(np.cov(adapted[~is_target], rowvar=False) - target_cov).max() < 0.15 * np.abs(target_cov).max()
    assert np.abs(np.cov(source, rowvar=False) - target_cov).max() > 0.5 * np.abs(target_cov).max()


def test_kmm_weights_favour_target_like_source_rows():
    """On a one-dimensional shift, KMM's weights rise where the target lies (skada 0.6's discriminator weights fall there)."""
    from skada import DiscriminatorReweightAdapter

    rng = np.random.default_rng(0)
    source, target = rng.normal(0, 1, (300, 1)), rng.normal(1.5, 1, (300, 1))
    model = KMMReweight()
    is_target = np.r_[np.zeros(300, bool), np.ones(300, bool)]
    _, weights = model._adapt(np.vstack([source, target]), np.array(["neutral"] * 600), is_target, np.ones(600), np.empty((0, 1)))
    assert np.corrcoef(source[:, 0], weights[:300])[0, 1] > 0.3
    assert weights[:300].sum() == pytest.approx(300)
    _, routed = DiscriminatorReweightAdapter().fit_transform(np.vstack([source, target]), sample_domain=np.r_[np.ones(300, int), -np.ones(300, int)])
    assert np.corrcoef(source[:, 0], routed["sample_weight"][:300])[0, 1] < 0  # why kmm_reweight does not use it


def test_subspace_alignment_caps_its_dimension_at_the_data(domains):
    train, test = domains
    assert fit(SubspaceAlignment(n_components=10_000), train, test).model_.n_features_in_ == train["X"].shape[1]
    assert fit(SubspaceAlignment(n_components=4), train, test).model_.n_features_in_ == 4
    for bad in (0, 2.5, "x"):
        with pytest.raises(ValueError, match="n_components must be a positive int or None"):
            fit(SubspaceAlignment(n_components=bad), train, test)


@pytest.mark.parametrize("method, params, message", [
    ("dann", {"epochs": 0}, "epochs must be a positive int"),
    ("dann", {"batch_size": 0}, "batch_size must be a positive int"),
    ("dann", {"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ("dann", {"learning_rate": "x"}, "learning_rate must be a number"),
    ("coral", {"reg": 5}, 'reg must be a shrinkage in \\[0, 1\\] or "auto"'),
    ("speaker_norm_linear", {"C": "x"}, "C must be a positive number"),
    ("speaker_norm_linear", {"target_share": "x"}, "target_share must be between 0 and 1"),
])
def test_bad_parameters_are_named_in_one_line(method, params, message):
    with pytest.raises(ValueError, match=message):
        protocol.dry_run(method, params)


def test_self_training_adds_confident_pseudo_labels_and_zero_rounds_is_the_base(domains):
    train, test = domains
    base = fit(SpeakerNormLinear(), train, test).predict_proba(test["X"], speakers=test["speakers"])
    none = fit(SelfTraining(rounds=0), train, test).predict_proba(test["X"], speakers=test["speakers"])
    np.testing.assert_allclose(none, base)
    model = fit(SelfTraining(rounds=2, threshold=0.5), train, test)
    assert len(model.pseudo_labelled_) == 2 and 0 < model.pseudo_labelled_[0] <= len(test["X"])
    assert fit(SelfTraining(threshold=1.0), train, test).pseudo_labelled_[0] == 0
    with pytest.raises(ValueError, match="threshold"):
        fit(SelfTraining(threshold=0), train, test)


def test_unlabelled_rows_are_checked(domains):
    train, test = domains
    with pytest.raises(ValueError, match="go together"):
        SpeakerNormLinear().fit(train["X"], train["y"], is_target=train["is_target"], speakers=train["speakers"], X_unlabelled=test["X"])
    with pytest.raises(ValueError, match="features"):
        fit(SpeakerNormLinear(), train, {"X": test["X"][:, :3], "speakers": test["speakers"]})


def test_adaptation_uses_the_test_audio(domains):
    """Unlike speaker_norm_linear, CORAL's fit changes with the unlabelled rows it is given."""
    train, test = domains
    with_audio = fit(Coral(), train, test).predict_proba(test["X"], speakers=test["speakers"])
    without = fit(Coral(), train).predict_proba(test["X"], speakers=test["speakers"])
    assert not np.allclose(with_audio, without)
    z = speaker_zscore(test["X"], test["speakers"])
    assert np.allclose(z.mean(axis=0), 0)


def test_dann_learns_from_fewer_utterances_than_one_batch():
    """skada rounds an epoch down to whole batches: 20 utterances (one target speaker, no test audio) must still train."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.array(EMOTIONS), 5)
    centres = {e: rng.normal(0.0, 3.0, 12) for e in EMOTIONS}
    X = np.array([centres[e] for e in y]) + rng.normal(0.0, 0.5, (len(y), 12))
    model = METHODS["dann"]().fit(X, y, is_target=np.ones(len(y), bool), speakers=np.full(len(y), "tgt/0"))
    assert sum(len(epoch["batches"]) for epoch in model.net_.history) > 0
    assert (model.predict(X, speakers=np.full(len(y), "tgt/0")) == y).mean() >= 0.8
