import math

import pytest

from scalemon.core.units import (
    format_bytes,
    format_count,
    format_duration,
    format_money,
    format_params,
    format_percent,
    parse_link,
    parse_reference,
)


@pytest.mark.parametrize("text, bits", [
    ("1gbit", 1e9), ("1Gbit/s", 1e9), ("2.5GbE", 2.5e9), ("100mbps", 1e8), ("10G", 1e10),
    ("125MB/s", 1e9), ("1MiB/s", 8 * 2**20), ("800 kbit", 8e5),
])
def test_parse_link(text, bits):
    assert parse_link(text) == pytest.approx(bits)


@pytest.mark.parametrize("text", ["fast", "", "1 gigabit", "0gbit", "1GiBit", "-1gbit"])
def test_parse_link_rejects(text):
    with pytest.raises(ValueError):
        parse_link(text)


def test_parse_reference():
    assert parse_reference("115@4") == (115.0, 4)
    assert parse_reference("2.5e0@d12".replace("2.5e0", "2.5")) == (2.5, 12)
    for bad in ("115", "@4", "115@0", "x@4"):
        with pytest.raises(ValueError):
            parse_reference(bad)


def test_formats():
    assert format_duration(0.0421) == "42 ms"
    assert format_duration(5.94) == "5.9 s"
    assert format_duration(2882) == "48 min"
    assert format_duration(3.4 * 3600) == "3.4 h"
    assert format_duration(5 * 86400) == "5.0 days"
    assert format_duration(26 * 365.25 * 86400) == "26 years"
    assert format_duration(188_523 * 365.25 * 86400) == "188,523 years"
    assert format_duration(math.nan) == "N/A"
    assert format_count(36_700_160) == "36.7M" and format_count(1.113e9) == "1.11B"
    assert format_params(185_597_952) == "185.6M" and format_params(560_988_160) == "561.0M"
    assert format_bytes(742e6) == "742 MB" and format_bytes(2.24e9) == "2.24 GB"
    assert format_percent(0.914) == "91%" and format_percent(None) == "N/A"
    assert format_money(19.1) == "$19.10" and format_money(126_901) == "$126,901"
