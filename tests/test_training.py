"""Which tables column a trained model's figures come from, and back (``crossemo train``)."""

from __future__ import annotations

import pytest

from crossemo import training
from crossemo.report import tables


@pytest.mark.parametrize("column", [*(c for c in tables.TABLE3_METHODS if c != "majority"), "scenario3"])
def test_a_column_and_the_model_it_stands_for_map_onto_each_other(column):
    method, with_source = training.model_of_column(column)
    assert training.results_column(method, with_source=with_source) == column


def test_the_rf_alone_is_the_baseline_and_with_a_source_table_2s_scenario_3():
    assert training.model_of_column("rf") == ("rf", False)
    assert training.model_of_column("scenario3") == ("rf", True)
    assert training.model_of_column("target_only_self_training") == ("self_training", False)
    assert training.model_of_column("coral") == ("coral", True)
