"""The results schema's reading rules: which fit a speed verdict reads."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bmbench.schema import SCALING_COLUMNS, judged_exponent


def _fit(**values: float) -> pd.Series:
    row = {column: np.nan for column in SCALING_COLUMNS} | {"p": 2.6, "p_low": 2.4, "p_high": 2.8}
    return pd.Series(row | values)


def test_a_verdict_reads_the_floor_then_the_paired_then_the_pooled_fit() -> None:
    paired = {"p_paired": 2.4, "p_paired_low": 2.3, "p_paired_high": 2.5}
    floor = {"p_floor": 2.05, "p_floor_low": 2.0, "p_floor_high": 2.1}
    assert judged_exponent(_fit(**paired, **floor)) == (2.05, 2.0, 2.1, "floor")
    assert judged_exponent(_fit(**paired)) == (2.4, 2.3, 2.5, "paired")
    assert judged_exponent(_fit()) == (2.6, 2.4, 2.8, "pooled")


def test_an_older_table_without_the_cycle_columns_reads_the_pooled_fit() -> None:
    assert judged_exponent({"p": 1.9, "p_low": 1.8, "p_high": 2.0}) == (1.9, 1.8, 2.0, "pooled")
    p, low, high, name = judged_exponent({"p": "", "p_low": 0.1, "p_high": 0.3})
    assert math.isnan(p) and (low, high, name) == (0.1, 0.3, "pooled")
