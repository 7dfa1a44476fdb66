"""Self-certainty: the model's own confidence, the geometric-mean token probability.

score = exp(mean token log-prob), in (0, 1]. Free: the log-probs come with the
samples. Samples without log-probs score 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ttscale.types import Problem, Sample
from ttscale.verifiers.base import Scores
from ttscale.verifiers.spec import VerifierSpec


@dataclass
class CertaintyVerifier:
    name: str = "certainty"
    uses_reference: bool = False

    def score(self, problem: Problem, candidates: Sequence[Sample]) -> Scores:
        out = []
        for c in candidates:
            m = c.mean_logprob
            out.append(math.exp(m) if m is not None else 0.0)
        return Scores(out)


SPEC = VerifierSpec("certainty", lambda a: CertaintyVerifier(), "self-certainty, exp(mean token log-prob)",
                    uses_logprobs=True, serves=True)
