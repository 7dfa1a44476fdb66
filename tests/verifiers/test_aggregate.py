from __future__ import annotations

import math

import pytest

from ttscale.errors import ConfigError
from ttscale.verifiers.aggregate import AGGREGATES, aggregate


@pytest.mark.parametrize(("how", "want"), [("last", 0.8), ("min", 0.5), ("prod", 0.9 * 0.5 * 0.8), ("mean", 2.2 / 3)])
def test_rules(how: str, want: float) -> None:
    assert math.isclose(aggregate([0.9, 0.5, 0.8], how), want)


def test_empty_and_unknown() -> None:
    assert all(aggregate([], how) == 0.0 for how in AGGREGATES)
    with pytest.raises(ConfigError, match="available"):
        aggregate([1.0], "max")
