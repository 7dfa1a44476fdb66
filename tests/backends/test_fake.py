from __future__ import annotations

from collections import Counter

from ttscale.backends.base import Backend
from ttscale.backends.fake import FakeBackend
from ttscale.types import GenerationRequest


def test_fake_follows_its_script() -> None:
    b = FakeBackend(answers={"1": 0.8, "2": 0.2})
    assert isinstance(b, Backend)
    [g] = b.generate([GenerationRequest(prompt="a b c", n=500, seed=0)])
    counts = Counter(c.text.split()[-1] for c in g.completions)
    assert 340 < counts["1."] < 460
    assert g.prefilled_tokens == 3 and g.completions[0].prefilled_tokens == 3
    assert sum(c.prefilled_tokens for c in g.completions) == 3


def test_fake_respects_max_tokens_and_stop() -> None:
    b = FakeBackend(filler_tokens=20)
    [g] = b.generate([GenerationRequest(prompt="x", n=2, max_tokens=5, seed=1)])
    assert all(c.n_tokens == 5 and c.finish_reason == "length" for c in g.completions)
    [g] = b.generate([GenerationRequest(prompt="x", n=1, stop=("The",), seed=1)])
    assert "The" not in g.completions[0].text


def test_fake_is_deterministic_given_seed() -> None:
    b = FakeBackend(answers={"1": 0.5, "2": 0.5})
    r = GenerationRequest(prompt="p", n=8, seed=5)
    assert [c.text for c in b.generate([r])[0].completions] == [c.text for c in b.generate([r])[0].completions]
