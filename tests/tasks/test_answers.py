from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ttscale.tasks.answers import answers_equivalent, extract_numeric_answer, normalize_number


@pytest.mark.parametrize(
    "text, expected",
    [
        ("She pays 3 * 4 = 12 dollars.\n#### 12", "12"),
        ("#### 1,234", "1234"),
        ("so the result is \\boxed{42} indeed", "42"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("The answer is 7.", "7"),
        ("The answer is: $18.50", "18.5"),
        ("first 3 then 5 then 9", "9"),
        ("The answer is -4", "-4"),
        ("no numbers here", None),
        ("The answer is 10.0.", "10"),
        ("#### 5\nThe answer is 6", "5"),  # the GSM8K marker wins over later prose
    ],
)
def test_extract(text: str, expected: str | None) -> None:
    assert extract_numeric_answer(text) == expected


def test_normalize() -> None:
    assert normalize_number("$1,200.50") == "1200.5"
    assert normalize_number("7.0") == "7"
    assert normalize_number("abc") == "abc"


@pytest.mark.parametrize(
    "a, b, eq",
    [("12", "12.0", True), ("1,000", "1000", True), ("0.5", "\\frac{1}{2}", True), ("3", "4", False), (None, "3", False)],
)
def test_equivalent(a: str | None, b: str | None, eq: bool) -> None:
    assert answers_equivalent(a, b) is eq


@given(st.integers(min_value=-(10**9), max_value=10**9))
def test_integer_roundtrip(n: int) -> None:
    assert extract_numeric_answer(f"blah blah. The answer is {n:,}.") == str(n)
