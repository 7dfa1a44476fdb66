from __future__ import annotations

from pathlib import Path

from ttscale.tasks.gsm_symbolic import (
    SPEC,
    GsmSymbolicTask,
    clean_worked_answer,
    generate_instances,
    load_templates,
    reference_from_answer,
    template_of,
)
from ttscale.types import PromptFormat


def test_originals() -> None:
    task = GsmSymbolicTask()
    probs = task.problems()
    assert len(probs) == 100
    first = probs[0]
    assert first.id == "gsm8k-0000"
    assert "shark" in first.prompt
    assert first.reference == "10"
    assert all(p.reference is not None for p in probs)
    assert task.grade(first, "10") and not task.grade(first, "11")


def test_worked_answers_agree_with_references() -> None:
    # Each template's worked answer ends in '#### N'; N is the problem's reference.
    for t in load_templates():
        assert reference_from_answer(t.answer) is not None
        assert "<<" not in clean_worked_answer(t.answer)


def test_few_shot_never_uses_own_template() -> None:
    task = GsmSymbolicTask(fmt=PromptFormat(style="completion", shots=4))
    probs = task.problems(limit=10)
    for p in probs:
        shots = task.shots_for(p)
        assert len(shots) == 4
        own = [t for t in task.templates() if t.key == p.meta["template"]][0]
        assert all(s.question != own.question for s in shots)
        req = task.request(p)
        assert req.prompt is not None and req.prompt.endswith(f"Question: {p.prompt}\nAnswer:")
    # Problems share one few-shot prefix (so its KV cache is reused), unless they are an exemplar.
    prefixes = {task.request(p).prompt.split(p.prompt)[0] for p in probs if p.meta["template"] not in ("0001", "0002", "0003", "0005")}  # type: ignore[union-attr]
    assert len(prefixes) == 1


def test_generated_instances_seeded_and_cached(tmp_path: Path) -> None:
    t = load_templates()[0]  # a fast template
    a = generate_instances(t, seed=3, n=2, cache=tmp_path)
    b = generate_instances(t, seed=3, n=2, cache=tmp_path)
    assert a == b and len(a) == 2
    assert (tmp_path / "seed-3" / "0000-n2.json").exists()
    for inst in a:
        assert reference_from_answer(inst["answer"]) is not None
    c = generate_instances(t, seed=4, n=2, cache=tmp_path / "other")
    assert c != a


def test_chat_request_has_instruction() -> None:
    task = GsmSymbolicTask()
    p = task.problems(limit=1)[0]
    req = task.request(p)
    assert req.messages is not None and "The answer is" in req.messages[-1].content


def test_every_variant_of_a_template_is_one_family() -> None:
    originals = GsmSymbolicTask().problems()
    assert all(template_of(p.id) == p.meta["template"] for p in originals)
    (generated,) = GsmSymbolicTask(seed=7).problems(limit=1)
    assert generated.id != originals[0].id and template_of(generated.id) == originals[0].meta["template"]
    assert template_of("q-1-2-3") == "q-1-2-3"  # not a GSM id: its own family
    assert SPEC.family is template_of  # what the planner's split and bootstrap read
