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
