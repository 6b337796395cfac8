"""Every shipped config file loads and names real methods, corpora and pairs."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossemo import corpora, methods, pipeline, protocol

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))


def test_there_is_a_config_per_use():
    assert {path.stem for path in CONFIGS} >= {"study", "quick", "own-corpus"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_is_valid(path):
    config = pipeline.RunConfig.from_toml(str(path))
    assert config.out and len(config.corpora) >= 2
    assert all(spec.recipe in corpora.RECIPES for spec in config.corpora)
    protocol.parse_methods(config.methods)
    protocol.parse_pairs(config.pairs, [spec.name for spec in config.corpora])
    for name, params in config.method_params.items():
        methods.make_method(name, **params)


def test_a_channel_index_written_as_text_in_a_config_is_an_index_as_on_the_command_line(tmp_path):
    (tmp_path / "run.toml").write_text('channel = "1"\n')
    assert pipeline.RunConfig.from_toml(str(tmp_path / "run.toml")).analysis_settings().channel == 1


def test_spaces_around_a_pairs_names_are_dropped():
    assert protocol.parse_pairs(" a + b : c ", ["a", "b", "c"]) == [("a+b", "c")]
