"""Metrics and curves are written at io.SIGNIFICANT_DIGITS, so that a rerun with another
thread count writes the same files (and `git status`, `dvc metrics diff` see nothing); the
rerun with another thread count is in tests/integration/test_resume.py."""

import json
import math

from polychromic.io import SIGNIFICANT_DIGITS, at_precision, write_json


def test_at_precision_rounds_floats_to_significant_digits_only(tmp_path):
    assert SIGNIFICANT_DIGITS == 6
    data = {"a": 0.12345649, "b": [123456.7, 1.0000004e-9, -2.5e-300], "n": 7, "t": True,
            "none": None, "s": "0.123456789", "nan": math.nan, "inf": -math.inf}
    rounded = at_precision(data)
    assert rounded["a"] == 0.123456 and rounded["b"] == [123457.0, 1e-9, -2.5e-300]
    assert rounded["n"] == 7 and rounded["t"] is True and rounded["s"] == "0.123456789"
    assert rounded["none"] is None and math.isnan(rounded["nan"]) and rounded["inf"] == -math.inf
    write_json(tmp_path / "m.json", {"x": 2 / 3})
    assert json.loads((tmp_path / "m.json").read_text()) == {"x": 0.666667}
