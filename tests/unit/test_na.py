"""The N/A value: NaN for arithmetic, 'N/A' for people, one singleton everywhere."""

import copy
import json
import math
import pickle
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalemon.core.na import NA, Explained, as_float, is_na, ratio


def test_prints_as_na_whatever_the_format_spec():
    assert str(NA) == repr(NA) == f"{NA}" == f"{NA!r}" == "N/A"
    assert f"{NA:.1f}" == f"{NA:,.0f}" == f"{NA:.1%}" == f"{NA:+g}" == "N/A"
    assert f"{NA:>8.1f}" == f"{NA:8.1f}" == f"{NA:08.1f}" == "     N/A"
    assert f"{NA:<6}" == "N/A   "
    assert f"{NA:*^9.2f}" == "***N/A***"
    assert f"{'x'}|{NA:>5}|" == "x|  N/A|"


def test_behaves_like_nan():
    assert math.isnan(NA)
    assert isinstance(NA, float)
    same = NA
    assert (same == NA) is False and (same != NA) is True  # NaN: unequal even to itself
    assert not (NA < 1 or NA > 1 or NA <= 1 or NA >= 1)
    assert math.isnan(float(NA)) and type(float(NA)) is float
    assert json.dumps({"power_w": NA}) == '{"power_w": NaN}'


@given(st.floats(allow_nan=False) | st.integers(min_value=-(10**6), max_value=10**6))
def test_arithmetic_with_na_stays_na(x):
    for result in (NA + x, x + NA, NA - x, x - NA, NA * x, x * NA, NA / 3, -NA, abs(NA)):
        assert is_na(result)
    if x:
        assert is_na(x / NA)


def test_arithmetic_that_is_not_nan_is_a_number():
    assert NA**0 == 1.0 and not is_na(NA**0)
    assert 1**NA == 1.0


def test_falsy_so_or_defaults_work():
    assert not NA
    assert (NA or 0.0) == 0.0


def test_one_singleton_through_pickle_and_copy():
    assert pickle.loads(pickle.dumps(NA)) is NA
    assert pickle.loads(pickle.dumps({"t": [NA]}))["t"][0] is NA
    assert copy.copy(NA) is NA and copy.deepcopy(NA) is NA
    assert round(NA) is NA and round(NA, 2) is NA


def test_is_na_is_identity_not_nan():
    assert is_na(NA)
    assert not is_na(float("nan"))  # a NaN loss is a reading, not a missing one
    assert not is_na(0.0) and not is_na(None)


@pytest.mark.parametrize(
    "value,expected",
    [(3, 3.0), (2.5, 2.5), (0, 0.0), ("7", 7.0)],
)
def test_as_float_keeps_real_readings_including_zero(value, expected):
    assert as_float(value) == expected


@pytest.mark.parametrize("value", [None, "N/A", float("nan"), object(), True])
def test_as_float_maps_non_readings_to_na(value):
    assert as_float(value) is NA


def test_ratio():
    assert ratio(1, 4) == 0.25
    assert ratio(0, 4) == 0.0
    assert ratio(1, 0) is NA and ratio(NA, 4) is NA and ratio(1, NA) is NA


def test_explained_reason_lookup():
    @dataclass(frozen=True, slots=True)
    class Reading(Explained):
        value: float
        reasons: tuple = ()

    r = Reading(NA, (("value", "not supported"),))
    assert r.reason("value") == "not supported"
    assert r.reason("other") is None
