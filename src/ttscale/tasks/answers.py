"""Final-answer extraction from model text, and answer equivalence.

Extraction tries, in order: a GSM8K ``#### N`` line, the last ``\\boxed{...}``,
the last "answer is N" phrase, and finally the last number in the text.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import lru_cache

_NUM = r"-?\$?\s?\d[\d,]*(?:\.\d+)?|-?\$?\s?\.\d+"
_HASH_RE = re.compile(r"####\s*(" + _NUM + r")")
_ANSWER_IS_RE = re.compile(r"answer\s*(?:is|:|=)\s*[:=]?\s*\**\s*(" + _NUM + r")", re.IGNORECASE)
_NUMBER_RE = re.compile(_NUM)


def _boxed_contents(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}``, with nested braces balanced."""
    out: list[str] = []
    start = 0
    while (i := text.find("\\boxed{", start)) >= 0:
        depth, j = 1, i + len("\\boxed{")
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth == 0:
            out.append(text[i + len("\\boxed{") : j - 1])
        start = j
    return out


def normalize_number(s: str) -> str:
    """Canonical text of a number: ``"$1,200.50"`` -> ``"1200.5"``, ``"7.0"`` -> ``"7"``.

    Returns the stripped input unchanged when it is not a plain number.
    """
    t = s.strip().replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    if t.isascii() and (t[1:] if t[:1] == "-" else t).isdigit():  # most answers: an integer, without Fraction
        return str(int(t))
    try:
        value = Fraction(t)
    except (ValueError, ZeroDivisionError):
        return s.strip()
    if value.denominator == 1:
        return str(value.numerator)
    try:
        return format(Decimal(t).normalize(), "f")
    except InvalidOperation:  # a fraction like "1/3"
        return t


def extract_numeric_answer(text: str) -> str | None:
    """The final numeric answer in ``text``, normalized, or ``None``.

    >>> extract_numeric_answer("so 3 + 4 = 7.\\n#### 7")
    '7'
    >>> extract_numeric_answer("The answer is $1,200.")
    '1200'
    """
    if m := _HASH_RE.findall(text):
        return normalize_number(m[-1])
    boxed = _boxed_contents(text)
    if boxed:
        inner = boxed[-1]
        nums = _NUMBER_RE.findall(inner)
        return normalize_number(nums[-1]) if len(nums) == 1 else inner.strip()
    if m := _ANSWER_IS_RE.findall(text):
        return normalize_number(m[-1])
    if m := _NUMBER_RE.findall(text):
        return normalize_number(m[-1])
    return None


def _as_fraction(s: str) -> Fraction | None:
    try:
        return Fraction(s.replace(",", "").replace("$", "").strip())
    except (ValueError, ZeroDivisionError):
        return None


@lru_cache(maxsize=4096)
def answers_equivalent(a: str | None, b: str | None, rel_tol: float = 1e-6) -> bool:
    """Whether two answers denote the same value.

    Plain numbers compare exactly (with a tiny relative tolerance for decimals);
    anything else goes to ``math-verify`` (LaTeX and symbolic expressions).
    """
    if a is None or b is None:
        return False
    if a.strip() == b.strip():
        return True
    fa, fb = _as_fraction(a), _as_fraction(b)
    if fa is not None and fb is not None:
        if fa == fb:
            return True
        return abs(fa - fb) <= rel_tol * max(abs(fa), abs(fb))
    if fa is not None or fb is not None:
        # One side is a plain number, the other is not: only math-verify can relate them.
        pass
    return _math_verify_equal(a, b)


def _math_verify_equal(a: str, b: str) -> bool:
    try:
        from math_verify import parse, verify
    except ImportError:  # pragma: no cover - math-verify is a core dependency
        return False
    try:
        pa, pb = parse(f"${a}$"), parse(f"${b}$")
        return bool(pa and pb and verify(pa, pb))
    except Exception:  # math-verify raises many kinds on odd input; unequal is the safe answer
        return False
