"""The methods: the common contract, and what each one does, on small synthetic data."""

from __future__ import annotations

import inspect
import pickle
import time

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier

from crossemo.labels import EMOTIONS
from crossemo.methods import (
    ADAPTING, DANN, DBN, METHODS, RECOMMENDED, Coral, FineTunedFCNN, KMMReweight, Majority, MultiTask, NormDistribution, NormNeutral, RandomForest,
    SelfTraining, SourceFCNN, SpeakerNorm, SpeakerNormLinear, SubspaceAlignment, make_method,
)
from crossemo.methods._forest import ForestMethod, build_forest
from crossemo.methods._torch import SeededDropout
from crossemo.methods.fcnn import HIDDEN_SIZES, N_OUTPUTS, _finetuned_from, build_network
from crossemo.methods.multitask import oversample_indices
from crossemo.methods.norm_distribution import bin_counts, match_source_bins, target_bins
from crossemo.methods.speaker_norm import speaker_zscore

TRANSFER = ("dbn", "fcnn", "multitask", "norm_neutral", "norm_distribution", "speaker_norm", "speaker_norm_linear", "coral", "subspace_alignment", "kmm_reweight", "self_training", "dann")

FAST = {
    "rf": {"n_estimators": 30},
    "multitask": {"n_estimators": 30},
    "norm_neutral": {"n_estimators": 30},
    "norm_distribution": {"n_estimators": 30},
    "speaker_norm": {"n_estimators": 30},
    "fcnn": {"hidden_sizes": (32, 16, 8), "epochs": 15, "finetune_epochs": 30},
    "dbn": {"hidden_sizes": (32, 16), "pretrain_epochs": 5, "finetune_epochs": 20},
    "dann": {"hidden": 32, "epochs": 30},
}
"""Small versions of every method, so the file runs quickly."""

FAST_SOURCE = {k: v for k, v in FAST["fcnn"].items() if k in SourceFCNN().get_params()}


def fast(name: str, **params):
    return make_method(name, **{**FAST.get(name, {}), **params})


def make_domains(seed: int = 0, *, d: int = 12, shift: float = 3.0, scale: float = 2.0, target_emotions=EMOTIONS, separation: float = 2.5):
    """A source corpus of 4 speakers and a target corpus of 3, the target an affine shift of the source.

    Returns the training arrays of scenario 3 (all source rows plus target speaker ``tgt/0``)
    and the test arrays (the other target speakers).
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, separation, size=(len(EMOTIONS), d))

    def corpus(prefix, n_speakers, per_emotion, emotions, a, b):
        X, y, s = [], [], []
        for k in range(n_speakers):
            offset = rng.normal(0.0, 0.3, d)
            for e in emotions:
                rows = centres[EMOTIONS.index(e)] + offset + rng.normal(0.0, 1.0, (per_emotion, d))
                X.append(rows * a + b)
                y += [e] * per_emotion
                s += [f"{prefix}/{k}"] * per_emotion
        return np.vstack(X), np.array(y), np.array(s)

    Xs, ys, ss = corpus("src", 4, 12, EMOTIONS, 1.0, 0.0)
    Xt, yt, st = corpus("tgt", 3, 8, target_emotions, scale, shift)
    held_in = st == "tgt/0"
    train = {
        "X": np.vstack([Xs, Xt[held_in]]),
        "y": np.concatenate([ys, yt[held_in]]),
        "is_target": np.concatenate([np.zeros(len(ys), bool), np.ones(held_in.sum(), bool)]),
        "speakers": np.concatenate([ss, st[held_in]]),
    }
    test = {"X": Xt[~held_in], "y": yt[~held_in], "speakers": st[~held_in]}
    return train, test


def fit(model, train, test=None):
    """Fit as the protocol does: the training rows, and the test rows' features (never their labels) when given."""
    unlabelled = {"X_unlabelled": test["X"], "speakers_unlabelled": test["speakers"]} if test is not None else {}
    return model.fit(train["X"], train["y"], is_target=train["is_target"], speakers=train["speakers"], **unlabelled)


@pytest.fixture(scope="module")
def domains():
    return make_domains()


# --- registry and the common contract -----------------------------------------------------------


def test_registry_has_every_method():
    assert list(METHODS) == [
        "majority", "rf", "dbn", "fcnn", "multitask", "norm_neutral", "norm_distribution", "speaker_norm",
        "speaker_norm_linear", "coral", "subspace_alignment", "kmm_reweight", "self_training", "dann",
    ]
    assert RECOMMENDED in METHODS
    assert METHODS["fcnn"] is FineTunedFCNN


def test_make_method_unknown_name():
    with pytest.raises(ValueError, match=r"unknown method 'svm'; known: majority, rf, dbn, fcnn, multitask, norm_neutral, norm_distribution, speaker_norm, speaker_norm_linear, coral"):
        make_method("svm")


def test_make_method_passes_seed_and_params_and_rejects_unknown_params():
    model = make_method("rf", random_state=7, n_estimators=5)
    assert isinstance(model, RandomForest)
    assert (model.random_state, model.n_estimators, model.max_depth) == (7, 5, 10)
    with pytest.raises(ValueError, match="no parameter"):
        make_method("rf", n_trees=5)


@pytest.mark.parametrize("name", list(METHODS))
def test_clone_and_params_round_trip(name):
    model = make_method(name, random_state=3)
    params = model.get_params()
    assert params["random_state"] == 3
    copy = clone(model)
    assert copy is not model and copy.get_params() == params
    assert type(model)().set_params(**model.get_params(deep=False)).get_params() == params


@pytest.mark.parametrize("name", list(METHODS))
def test_fit_predict_contract(name, domains):
    train, test = domains
    model = fast(name, random_state=1)
    assert fit(model, train, test) is model
    predicted = model.predict(test["X"], speakers=test["speakers"])
    assert isinstance(predicted, np.ndarray) and predicted.shape == (len(test["X"]),)
    assert predicted.dtype.kind == "U"
    assert set(predicted) <= set(model.classes_) <= set(EMOTIONS)
    again = fit(fast(name, random_state=1), train, test).predict(test["X"], speakers=test["speakers"])
    np.testing.assert_array_equal(predicted, again)
    fitted = [attr for attr in vars(model) if attr not in model.get_params()]
    assert fitted and all(attr.endswith("_") for attr in fitted)


@pytest.mark.parametrize("name", list(METHODS))
def test_exactly_the_adapting_methods_learn_from_unlabelled_rows(name, domains):
    train, test = domains
    with_audio = fit(fast(name), train, test).predict_proba(test["X"], speakers=test["speakers"])
    without = fit(fast(name), train).predict_proba(test["X"], speakers=test["speakers"])
    assert np.array_equal(with_audio, without) == (name not in ADAPTING)


@pytest.mark.parametrize("name", list(METHODS))
def test_predict_takes_no_labels(name, domains):
    parameters = inspect.signature(METHODS[name].predict).parameters
    assert list(parameters) == ["self", "X", "speakers"]
    assert parameters["speakers"].kind is inspect.Parameter.KEYWORD_ONLY
    fit_parameters = inspect.signature(METHODS[name].fit).parameters
    assert [p for p in fit_parameters if fit_parameters[p].kind is inspect.Parameter.KEYWORD_ONLY] == ["is_target", "speakers", "X_unlabelled", "speakers_unlabelled"]
    assert fit_parameters["X_unlabelled"].default is None and fit_parameters["speakers_unlabelled"].default is None


@pytest.mark.parametrize("name", ["rf", "speaker_norm", "dbn", "fcnn"])
def test_scenarios_one_and_two(name, domains):
    """Source only (scenario 1) where the method allows it, and target only (scenario 2)."""
    train, test = domains
    target = train["is_target"]
    only_target = {k: v[target] for k, v in train.items()}
    source_model = SourceFCNN(**FAST_SOURCE).fit(train["X"][~target], train["y"][~target], speakers=train["speakers"][~target])
    extra = {"source_model": source_model} if name == "fcnn" else {}
    predicted = fit(fast(name, **extra), only_target).predict(test["X"], speakers=test["speakers"])
    assert set(predicted) <= set(EMOTIONS)
    if name != "fcnn":
        only_source = {k: v[~target] for k, v in train.items()}
        assert set(fit(fast(name), only_source).predict(test["X"], speakers=test["speakers"])) <= set(EMOTIONS)


@pytest.mark.parametrize("name", ["speaker_norm_linear", "self_training", "dann"])
def test_target_only_twins_fit_without_a_source(name, domains):
    """The twins run in scenario 2: the target's training speaker alone (and, for adaptation, the test audio)."""
    train, test = domains
    only_target = {k: v[train["is_target"]] for k, v in train.items()}
    predicted = fit(fast(name), only_target, test).predict(test["X"], speakers=test["speakers"])
    assert np.mean(predicted == test["y"]) > 0.5


@pytest.mark.parametrize("name", ["rf", "speaker_norm", "speaker_norm_linear", "self_training", "dann"])
def test_a_target_speaker_of_one_emotion_trained_on_alone_gives_that_emotion(name, domains):
    """Scenario 2 on a speaker who recorded only anger: the linear family's solver refused one class and failed the run."""
    train, test = domains
    one = train["is_target"] & (train["y"] == "anger")
    only_anger = {k: v[one] for k, v in train.items()}
    model = fit(fast(name), only_anger, test)
    assert list(model.classes_) == ["anger"]
    np.testing.assert_array_equal(model.predict_proba(test["X"], speakers=test["speakers"]), np.ones((len(test["y"]), 1)))


@pytest.mark.parametrize("name", ["coral", "subspace_alignment", "kmm_reweight"])
def test_adapters_need_source_rows(name, domains):
    train, test = domains
    only_target = {k: v[train["is_target"]] for k, v in train.items()}
    with pytest.raises(ValueError, match="needs source rows"):
        fit(fast(name), only_target, test)


@pytest.mark.parametrize("name", ["multitask", "norm_neutral", "norm_distribution", "fcnn"])
def test_methods_that_need_target_rows_say_so(name, domains):
    train, _ = domains
    only_source = {k: v[~train["is_target"]] for k, v in train.items()}
    with pytest.raises(ValueError, match="target"):
        fit(fast(name), only_source)


def test_bad_inputs_are_rejected(domains):
    train, test = domains
    with pytest.raises(ValueError, match="one entry per row"):
        RandomForest(n_estimators=2).fit(train["X"], train["y"][:-1], is_target=train["is_target"], speakers=train["speakers"])
    bad = train["X"].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        RandomForest(n_estimators=2).fit(bad, train["y"], is_target=train["is_target"], speakers=train["speakers"])
    model = fit(RandomForest(n_estimators=2), train)
    with pytest.raises(ValueError, match="features"):
        model.predict(test["X"][:, :3], speakers=test["speakers"])


@pytest.mark.parametrize("name", TRANSFER)
def test_transfer_methods_beat_chance_on_a_shifted_domain(name, domains):
    """Target = 2 × source + 3, one target speaker to learn from: every transfer method beats chance (0.25) clearly.

    The normalising methods undo the shift, so they should be close to perfect; the
    networks only see it through the target speaker's rows, so they get a looser bound.
    """
    train, test = domains
    predicted = fit(fast(name), train, test).predict(test["X"], speakers=test["speakers"])
    accuracy = np.mean(predicted == test["y"])
    bound = 0.45 if name in ("dbn", "fcnn") else 0.8
    assert accuracy > bound, f"{name}: accuracy {accuracy:.2f} (chance 0.25)"


# --- baselines ----------------------------------------------------------------------------------


def _rows(labels, d=3):
    labels = np.array(labels)
    return {"X": np.arange(len(labels) * d, dtype=float).reshape(len(labels), d), "y": labels,
            "is_target": np.zeros(len(labels), bool), "speakers": np.array(["a"] * len(labels))}


def test_majority_predicts_most_frequent_class():
    model = fit(Majority(), _rows(["joy", "anger", "joy", "sadness", "joy"]))
    assert model.majority_ == "joy"
    assert list(model.classes_) == ["anger", "joy", "sadness"]
    assert model.class_counts_ == {"anger": 1, "joy": 3, "sadness": 1}
    np.testing.assert_array_equal(model.predict(np.zeros((4, 3)), speakers=np.array(["b"] * 4)), ["joy"] * 4)


def test_majority_breaks_ties_in_emotion_order():
    assert fit(Majority(), _rows(["sadness", "joy", "anger", "sadness", "joy", "anger"])).majority_ == "anger"
    assert fit(Majority(), _rows(["sadness", "neutral", "joy", "neutral", "sadness", "joy"])).majority_ == "neutral"


def test_rf_defaults_are_the_study_forest():
    model = RandomForest()
    assert (model.n_estimators, model.max_depth, model.random_state) == (1000, 10, 0)
    forest = build_forest(random_state=5)
    assert isinstance(forest, RandomForestClassifier)
    assert (forest.n_estimators, forest.max_depth, forest.n_jobs, forest.random_state) == (1000, 10, 1, 5)


@pytest.mark.parametrize("name", ["rf", "multitask", "norm_neutral", "norm_distribution", "speaker_norm"])
def test_forest_methods_share_the_forest_builder(name, domains):
    train, _ = domains
    model = fit(fast(name, random_state=4, max_depth=6), train)
    assert isinstance(model, ForestMethod)
    assert (model.forest_.n_estimators, model.forest_.max_depth, model.forest_.n_jobs, model.forest_.random_state) == (30, 6, 1, 4)


def test_rf_is_deterministic_per_seed(domains):
    train, test = domains
    proba = [fit(fast("rf", random_state=seed), train).forest_.predict_proba(test["X"]) for seed in (0, 0, 1)]
    np.testing.assert_array_equal(proba[0], proba[1])
    assert not np.array_equal(proba[0], proba[2])


# --- norm_distribution --------------------------------------------------------------------------


def test_target_bins_are_equal_width_with_out_of_range_values_in_end_bins():
    lower, upper = np.array([0.0, -1.0]), np.array([10.0, 1.0])
    X = np.array([[0.0, -1.0], [1.99, -0.61], [2.0, -0.59], [5.0, 0.0], [9.99, 0.99], [10.0, 1.0], [-5.0, -7.0], [15.0, 3.0]])
    bins = target_bins(X, lower, upper, 5)
    np.testing.assert_array_equal(bins[:, 0], [0, 0, 1, 2, 4, 4, 0, 4])
    np.testing.assert_array_equal(bins[:, 1], [0, 0, 1, 2, 4, 4, 0, 4])


def test_target_bins_of_a_constant_feature_are_zero():
    bins = target_bins(np.array([[3.0], [2.0], [4.0]]), np.array([3.0]), np.array([3.0]), 5)
    np.testing.assert_array_equal(bins, [[0], [0], [0]])


def test_source_bins_match_target_shares_exactly_up_to_rounding():
    rng = np.random.default_rng(1)
    n_target, m, d = 17, 53, 40
    values_t = rng.normal(size=(n_target, d)) ** 3
    counts = bin_counts(target_bins(values_t, values_t.min(axis=0), values_t.max(axis=0), 5), 5)
    assert (counts.sum(axis=0) == n_target).all() and (counts[0] > 0).all() and (counts[4] > 0).all()
    values = rng.normal(size=(m, d))
    bins = match_source_bins(values, counts)
    assert bins.min() >= 0 and bins.max() <= 4
    source_counts = bin_counts(bins, 5)
    assert (source_counts.sum(axis=0) == m).all()
    expected_cumulative = np.floor(np.cumsum(counts, axis=0) * m / n_target + 0.5)
    np.testing.assert_array_equal(np.cumsum(source_counts, axis=0), expected_cumulative)
    assert (np.abs(source_counts - counts * m / n_target) <= 1).all()
    for j in range(d):  # lower values never get a higher bin
        order = np.argsort(values[:, j])
        assert (np.diff(bins[order, j]) >= 0).all()


def test_norm_distribution_per_emotion_shares(domains):
    train, test = domains
    model = fit(fast("norm_distribution"), train)
    target, source = train["is_target"], ~train["is_target"]
    binned_target = target_bins(train["X"][target], model.lower_, model.upper_, 5)
    assert binned_target.min() == 0 and binned_target.max() == 4
    np.testing.assert_array_equal(model.transform(test["X"]), target_bins(test["X"], model.lower_, model.upper_, 5))
    binned_source = model.transform_source(train["X"][source], train["y"][source])
    for emotion in EMOTIONS:
        t_counts = bin_counts(binned_target[train["y"][target] == emotion], 5)
        np.testing.assert_array_equal(t_counts, model.target_counts_[emotion])
        s_counts = bin_counts(binned_source[train["y"][source] == emotion], 5)
        m, n = s_counts.sum(axis=0)[0], t_counts.sum(axis=0)[0]
        np.testing.assert_array_equal(np.cumsum(s_counts, axis=0), np.floor(np.cumsum(t_counts, axis=0) * m / n + 0.5))
    assert model.fallback_emotions_ == []


def test_norm_distribution_source_emotion_missing_in_target_uses_overall_shares():
    train, test = make_domains(target_emotions=("neutral", "anger", "joy"))
    model = fit(fast("norm_distribution"), train)
    assert model.fallback_emotions_ == ["sadness"]
    source = ~train["is_target"]
    sadness = train["y"][source] == "sadness"
    binned = model.transform_source(train["X"][source], train["y"][source])[sadness]
    m, n = sadness.sum(), train["is_target"].sum()
    np.testing.assert_array_equal(np.cumsum(bin_counts(binned, 5), axis=0), np.floor(np.cumsum(model.overall_counts_, axis=0) * m / n + 0.5))
    assert "sadness" in model.classes_  # the source taught it, so it may be predicted
    assert set(model.predict(test["X"], speakers=test["speakers"])) <= set(model.classes_)


def test_norm_distribution_binning_is_fast_at_full_size():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(56, 1582))
    source = rng.lognormal(size=(1000, 1582))
    started = time.perf_counter()
    lower, upper = target.min(0), target.max(0)
    counts = bin_counts(target_bins(target, lower, upper), 5)
    match_source_bins(source, counts)
    assert time.perf_counter() - started < 1.0


# --- norm_neutral and speaker_norm --------------------------------------------------------------


def test_norm_neutral_puts_each_corpus_neutral_mean_at_zero(domains):
    train, test = domains
    model = fit(fast("norm_neutral"), train)
    normalised = model.transform(train["X"], is_target=train["is_target"], speakers=train["speakers"])
    for corpus in (train["is_target"], ~train["is_target"]):
        neutral = corpus & (train["y"] == "neutral")
        np.testing.assert_allclose(normalised[neutral].mean(axis=0), 0.0, atol=1e-9)
        np.testing.assert_allclose(normalised[corpus].std(axis=0), 1.0, rtol=1e-9)
    np.testing.assert_allclose(model.transform(test["X"], is_target=np.ones(len(test["X"]), bool), speakers=test["speakers"]), (test["X"] - model.target_mean_) / model.target_scale_)
    assert model.neutral_fallback_ == {"source": False, "target": False}


def test_norm_neutral_normalises_each_pooled_source_corpus_by_its_own_neutral_speech(domains):
    """A multi-source pair: two source corpora, one shifted, each lands with its neutral speech at zero."""
    train, _ = domains
    source = ~train["is_target"]
    second = source & np.isin(train["speakers"], ["src/2", "src/3"])
    pooled = {**train, "X": train["X"].copy(), "speakers": train["speakers"].copy()}
    pooled["X"][second] = pooled["X"][second] * 3.0 + 10.0
    pooled["speakers"][second] = np.char.replace(pooled["speakers"][second].astype(str), "src/", "other/")
    model = fit(fast("norm_neutral"), pooled)
    assert set(model.source_mean_) == {"src", "other"}
    normalised = model.transform(pooled["X"], is_target=pooled["is_target"], speakers=pooled["speakers"])
    for rows in (source & ~second, second):
        np.testing.assert_allclose(normalised[rows & (pooled["y"] == "neutral")].mean(axis=0), 0.0, atol=1e-9)
    with pytest.raises(ValueError, match="corpus 'third'"):
        model.transform(pooled["X"][:2], is_target=np.zeros(2, bool), speakers=np.array(["third/a", "third/b"]))


def test_norm_neutral_guards_constant_features_and_missing_neutral():
    train, test = make_domains(target_emotions=("anger", "joy", "sadness"))
    train["X"][:, 0] = 4.0
    model = fit(fast("norm_neutral"), train)
    assert model.neutral_fallback_ == {"source": False, "target": True}
    target = train["is_target"]
    np.testing.assert_allclose(model.target_mean_, train["X"][target].mean(axis=0))
    assert model.target_scale_[0] == 1.0 and model.source_scale_["src"][0] == 1.0
    assert np.isfinite(model.transform(train["X"], is_target=target, speakers=train["speakers"])).all()
    assert set(model.predict(test["X"], speakers=test["speakers"])) <= set(model.classes_)


def test_speaker_zscore_gives_every_speaker_mean_zero_and_unit_std(domains):
    train, _ = domains
    normalised = speaker_zscore(train["X"], train["speakers"])
    for speaker in np.unique(train["speakers"]):
        rows = train["speakers"] == speaker
        np.testing.assert_allclose(normalised[rows].mean(axis=0), 0.0, atol=1e-9)
        np.testing.assert_allclose(normalised[rows].std(axis=0), 1.0, rtol=1e-9)
    lone = speaker_zscore(np.array([[1.0, 2.0], [3.0, 5.0], [7.0, 7.0]]), np.array(["a", "a", "b"]))
    np.testing.assert_array_equal(lone[2], [0.0, 0.0])


def test_speaker_norm_uses_each_test_speakers_own_statistics(domains):
    train, test = domains
    model = fit(fast("speaker_norm"), train)
    before = model.predict(test["X"], speakers=test["speakers"])
    shifted = test["X"].copy()
    first = test["speakers"] == test["speakers"][0]
    shifted[first] = shifted[first] * 4.0 + 100.0
    np.testing.assert_array_equal(model.predict(shifted, speakers=test["speakers"]), before)
    assert isinstance(model, SpeakerNorm)


# --- multitask ----------------------------------------------------------------------------------


def test_oversampling_equalises_counts_with_whole_copies_and_a_seeded_remainder():
    indices = oversample_indices(7, 45, np.random.default_rng(0))
    assert len(indices) == 45
    per_row = np.bincount(indices, minlength=7)
    assert set(per_row) <= {6, 7} and (per_row == 7).sum() == 45 % 7
    np.testing.assert_array_equal(indices, oversample_indices(7, 45, np.random.default_rng(0)))
    np.testing.assert_array_equal(oversample_indices(9, 5, np.random.default_rng(0)), np.arange(9))


def test_multitask_never_predicts_a_source_class(domains):
    train, test = domains
    model = fit(fast("multitask"), train)
    assert model.corpus_counts_["source"] == model.corpus_counts_["target"] == (~train["is_target"]).sum()
    assert set(model.forest_.classes_) == {f"{e}@{c}" for e in EMOTIONS for c in ("source", "target")}
    assert set(model.forest_.classes_[model.target_columns_]) == {f"{e}@target" for e in EMOTIONS}
    predicted = model.predict(test["X"], speakers=test["speakers"])
    assert set(predicted) <= set(EMOTIONS)
    np.testing.assert_allclose(model.predict_proba(test["X"], speakers=test["speakers"]).sum(axis=1), 1.0)


def test_multitask_predicts_only_the_targets_emotions():
    train, test = make_domains(target_emotions=("neutral", "anger", "sadness"))
    test_joy = make_domains()[1]
    model = fit(fast("multitask"), train)
    assert list(model.classes_) == ["neutral", "anger", "sadness"]
    assert "joy@source" in set(model.forest_.classes_)
    predicted = model.predict(test_joy["X"], speakers=test_joy["speakers"])
    assert "joy" not in set(predicted)


# --- fcnn ---------------------------------------------------------------------------------------


def test_fcnn_defaults_are_the_study_network():
    model = FineTunedFCNN()
    assert tuple(model.hidden_sizes) == HIDDEN_SIZES == (1000, 500, 300) and N_OUTPUTS == 4
    network = build_network(1582, HIDDEN_SIZES, torch.Generator().manual_seed(0))
    shapes = [(layer.in_features, layer.out_features) for layer in network if isinstance(layer, torch.nn.Linear)]
    assert shapes == [(1582, 1000), (1000, 500), (500, 300), (300, 4)]
    assert [type(layer) for layer in network][1::2] == [torch.nn.Tanh] * 3
    assert SourceFCNN().get_params() == {k: v for k, v in model.get_params(deep=False).items() if k in SourceFCNN().get_params()}


@pytest.fixture(scope="module")
def source_fcnn(domains):
    train, _ = domains
    source = ~train["is_target"]
    return SourceFCNN(random_state=2, **FAST_SOURCE).fit(train["X"][source], train["y"][source], speakers=train["speakers"][source])


def test_fcnn_fine_tuning_touches_only_the_output_layer(domains, source_fcnn):
    train, _ = domains
    before = {k: v.clone() for k, v in source_fcnn.network_.state_dict().items()}
    model = fit(fast("fcnn", random_state=2, finetune_layers=1, source_model=source_fcnn), train)  # the study: the output layer only
    after = model.network_.state_dict()
    output = f"{len(model.network_) - 1}."
    for name, value in before.items():
        if name.startswith(output):
            assert not torch.equal(after[name], value), name
        else:
            assert torch.equal(after[name], value), name
    assert all(not p.requires_grad for p in model.network_[:-1].parameters())
    for name, value in source_fcnn.network_.state_dict().items():  # the shared model itself is untouched
        assert torch.equal(value, before[name])


def test_fcnn_with_or_without_a_source_model_predicts_the_same(domains, source_fcnn):
    train, test = domains
    given = fit(fast("fcnn", random_state=2, source_model=source_fcnn), train)
    trained = fit(fast("fcnn", random_state=2), train)
    np.testing.assert_array_equal(given.predict(test["X"], speakers=test["speakers"]), trained.predict(test["X"], speakers=test["speakers"]))
    np.testing.assert_array_equal(given.predict_proba(test["X"], speakers=test["speakers"]), trained.predict_proba(test["X"], speakers=test["speakers"]))
    recloned = fit(clone(given), train)  # clone leaves an unfitted source model, which fit trains
    np.testing.assert_array_equal(recloned.predict(test["X"], speakers=test["speakers"]), trained.predict(test["X"], speakers=test["speakers"]))


def test_fitted_source_fcnn_survives_pickling(domains, source_fcnn):
    train, test = domains
    restored = pickle.loads(pickle.dumps(source_fcnn))
    a = fit(fast("fcnn", random_state=2, source_model=source_fcnn), train).predict_proba(test["X"], speakers=test["speakers"])
    b = fit(fast("fcnn", random_state=2, source_model=restored), train).predict_proba(test["X"], speakers=test["speakers"])
    np.testing.assert_array_equal(a, b)


def test_fcnn_refuses_a_source_model_with_other_parameters(domains, source_fcnn):
    train, _ = domains
    with pytest.raises(ValueError, match="other source parameters"):
        fit(fast("fcnn", random_state=3, source_model=source_fcnn), train)
    as_lists = fast("fcnn", random_state=2, source_model=source_fcnn).set_params(hidden_sizes=list(FAST_SOURCE["hidden_sizes"]))
    fit(as_lists, train)


def test_fcnn_keeps_torch_threads(domains, source_fcnn):
    train, test = domains
    threads = torch.get_num_threads()
    fit(fast("fcnn", random_state=2, source_model=source_fcnn), train).predict(test["X"], speakers=test["speakers"])
    assert torch.get_num_threads() == threads


# --- dbn ----------------------------------------------------------------------------------------


def test_dbn_pretraining_reduces_reconstruction_error(domains):
    train, _ = domains
    model = fit(fast("dbn"), train)
    assert len(model.reconstruction_errors_) == 2
    for errors in model.reconstruction_errors_:
        assert len(errors) == FAST["dbn"]["pretrain_epochs"] + 1
        assert errors[-1] < errors[0]
    assert model.finetune_loss_curve_[-1] < model.finetune_loss_curve_[0]
    linear = [layer for layer in model.network_ if isinstance(layer, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linear] == [(12, 32), (32, 16), (16, 4)]


def test_dbn_predicts_only_known_classes():
    train, _ = make_domains(target_emotions=("neutral", "anger", "joy"))
    keep = train["y"] != "sadness"
    train = {k: v[keep] for k, v in train.items()}
    model = fit(fast("dbn"), train)
    assert list(model.classes_) == ["neutral", "anger", "joy"]
    _, test_all = make_domains()  # its test rows include sadness
    assert set(model.predict(test_all["X"], speakers=test_all["speakers"])) <= {"neutral", "anger", "joy"}


def test_dbn_defaults():
    model = DBN()
    assert tuple(model.hidden_sizes) == (512, 256) and model.random_state == 0
    assert isinstance(make_method("dbn"), DBN)


def test_method_classes_are_exported():
    assert {
        MultiTask, NormDistribution, NormNeutral, SpeakerNorm, RandomForest, Majority, DBN, FineTunedFCNN,
        SpeakerNormLinear, Coral, SubspaceAlignment, KMMReweight, SelfTraining, DANN,
    } == set(METHODS.values())


# --- fcnn: the readings of issue 11 ----------------------------------------------------------------


def test_fcnn_early_stopping_holds_out_a_source_speaker_never_a_target_row(domains):
    train, _ = domains
    params = {**FAST["fcnn"], "early_stopping": True, "epochs": 12, "patience": 3}
    model = fit(make_method("fcnn", random_state=4, **params), train)
    source_speakers = set(train["speakers"][~train["is_target"]])
    assert model.validation_speaker_ in source_speakers
    # The source network, its held-out speaker and its stopping epoch ignore the target rows entirely.
    scrambled = {**train, "X": train["X"].copy(), "y": train["y"].copy()}
    rng = np.random.default_rng(0)
    scrambled["X"][train["is_target"]] = rng.normal(size=(train["is_target"].sum(), train["X"].shape[1]))
    scrambled["y"][train["is_target"]] = rng.permutation(scrambled["y"][train["is_target"]])
    other = fit(make_method("fcnn", random_state=4, **params), scrambled)
    assert (other.validation_speaker_, other.best_epoch_) == (model.validation_speaker_, model.best_epoch_)
    frozen = _finetuned_from(model.network_, model.finetune_layers)  # below it, the source network as trained
    assert frozen > 0
    for (name, a), b in zip(model.network_[:frozen].state_dict().items(), other.network_[:frozen].state_dict().values()):
        assert torch.equal(a, b), name


def test_source_fcnn_early_stopping_keeps_its_best_epoch(domains):
    train, _ = domains
    source = ~train["is_target"]
    X, y, speakers = train["X"][source], train["y"][source], train["speakers"][source]
    model = SourceFCNN(**{**FAST_SOURCE, "epochs": 40, "learning_rate": 3e-2}, early_stopping=True, patience=2, random_state=1).fit(X, y, speakers=speakers)
    curve = model.validation_loss_curve_
    assert model.best_epoch_ == int(np.argmin(curve)) + 1
    assert len(curve) == len(model.loss_curve_) <= 40
    if len(curve) < 40:  # it stopped: exactly `patience` epochs without improvement
        assert len(curve) == model.best_epoch_ + 2
    held_out = speakers == model.validation_speaker_
    assert 0 < held_out.sum() < len(y)
    with torch.no_grad():
        logits = model.network_(model.standardise(X[held_out], speakers[held_out]))
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([EMOTIONS.index(e) for e in y[held_out]]))
    assert float(loss) == pytest.approx(min(curve), rel=1e-5)  # the network is the best epoch's, not the last one's


def test_source_fcnn_early_stopping_needs_source_speakers(domains):
    train, _ = domains
    source = ~train["is_target"]
    X, y = train["X"][source], train["y"][source]
    with pytest.raises(ValueError, match="speaker ids"):
        SourceFCNN(**FAST_SOURCE, scaling="source", early_stopping=True).fit(X, y)
    with pytest.raises(ValueError, match="at least two source speakers"):
        SourceFCNN(**FAST_SOURCE, early_stopping=True).fit(X, y, speakers=np.full(len(y), "one"))
    with pytest.raises(ValueError, match="speaker ids"):
        SourceFCNN(**FAST_SOURCE, scaling="speaker").fit(X, y)


def test_fcnn_speaker_scaling_ignores_each_speakers_offset_and_scale(domains):
    train, test = domains
    model = fit(fast("fcnn", scaling="speaker", random_state=2), train)
    moved = test["X"].copy()
    first = test["speakers"] == test["speakers"][0]
    moved[first] = moved[first] * 3.0 - 7.0  # one test speaker recorded louder and offset
    np.testing.assert_allclose(model.predict_proba(moved, speakers=test["speakers"]), model.predict_proba(test["X"], speakers=test["speakers"]), atol=1e-5)


def test_fcnn_fine_tuning_two_layers_touches_only_the_top_two(domains, source_fcnn):
    train, _ = domains
    model = fit(fast("fcnn", random_state=2, finetune_layers=2, source_model=source_fcnn), train)
    linears = [i for i, layer in enumerate(model.network_) if isinstance(layer, torch.nn.Linear)]
    after = model.network_.state_dict()
    for name, value in source_fcnn.network_.state_dict().items():
        layer = int(name.split(".")[0])
        if layer in linears[-2:]:
            assert not torch.equal(after[name], value), name
        else:
            assert torch.equal(after[name], value), name
    with pytest.raises(ValueError, match="finetune_layers"):
        fit(fast("fcnn", random_state=2, finetune_layers=5, source_model=source_fcnn), train)


def test_fcnn_dropout_is_seeded_and_picklable(domains):
    train, test = domains
    a = fit(fast("fcnn", dropout=0.3, random_state=5), train)
    b = fit(fast("fcnn", dropout=0.3, random_state=5), train)
    assert any(isinstance(layer, SeededDropout) for layer in a.network_)
    np.testing.assert_array_equal(a.predict_proba(test["X"], speakers=test["speakers"]), b.predict_proba(test["X"], speakers=test["speakers"]))
    restored = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(restored.predict_proba(test["X"], speakers=test["speakers"]), a.predict_proba(test["X"], speakers=test["speakers"]))
    with pytest.raises(ValueError, match="dropout"):
        fit(fast("fcnn", dropout=1.0), train)
    with pytest.raises(ValueError, match="scaling"):
        fit(fast("fcnn", scaling="corpus"), train)


def test_dbn_speaker_scaling_ignores_each_speakers_offset_and_scale(domains):
    train, test = domains
    model = fit(fast("dbn", scaling="speaker", random_state=2), train)
    moved = test["X"].copy()
    first = test["speakers"] == test["speakers"][0]
    moved[first] = moved[first] * 3.0 - 7.0
    np.testing.assert_allclose(model.predict_proba(moved, speakers=test["speakers"]), model.predict_proba(test["X"], speakers=test["speakers"]), atol=1e-5)
    with pytest.raises(ValueError, match="scaling"):
        fit(fast("dbn", scaling="corpus"), train)
