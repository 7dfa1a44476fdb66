"""The prefix cache on a simulated KV memory: what it prefills, keeps and frees."""

from __future__ import annotations

from ttscale.backends.llama_prefix import HOLDER, PrefixCache, common_prefix


class FakeMemory:
    """Sequences as token lists, with llama.cpp's seq_rm / seq_cp semantics (p0 = -1: whole sequence)."""

    def __init__(self) -> None:
        self.seqs: dict[int, list[int]] = {}
        self.decoded = 0

    def llama_memory_seq_rm(self, _mem: object, seq: int, p0: int, _p1: int) -> None:
        self.seqs[seq] = [] if p0 < 0 else self.seqs.get(seq, [])[:p0]

    def llama_memory_seq_cp(self, _mem: object, src: int, dst: int, _p0: int, _p1: int) -> None:
        self.seqs[dst] = list(self.seqs.get(src, []))

    def decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        for tok, pos, seq, _ in items:
            cells = self.seqs.setdefault(seq, [])
            assert pos == len(cells), "tokens must extend the sequence in order"
            cells.append(tok)
            self.decoded += 1


def cache(slots: int = 2, n_ctx: int = 4096) -> tuple[PrefixCache, FakeMemory]:
    m = FakeMemory()
    return PrefixCache(m, None, m.decode, n_ctx, 64, range(10, 10 + slots)), m


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2 and common_prefix([], [1]) == 0 and common_prefix([5], [5]) == 1


def test_reuse_of_the_holder_prefills_only_the_new_tail() -> None:
    pc, m = cache()
    a = list(range(100))
    assert pc.hold(a) == 100 and m.seqs[HOLDER] == a
    assert pc.hold(a + [7, 8]) == 2 and m.seqs[HOLDER] == a + [7, 8]
    assert pc.hold(a[:50]) == 0 and m.seqs[HOLDER] == a[:50]


def test_alternating_headers_come_back_from_a_kept_slot() -> None:
    pc, m = cache()
    a, b = list(range(100)), list(range(1000, 1080))
    pc.hold(a)
    assert pc.hold(b) == 80  # a is kept in a slot before the holder is cut back
    assert pc.kept == [a]
    before = m.decoded
    assert pc.hold(a) == 0 and m.decoded == before and m.seqs[HOLDER] == a  # copied back, nothing prefilled
    assert b in pc.kept


def test_short_prefixes_are_not_kept_and_slots_are_bounded() -> None:
    pc, _ = cache(slots=1)
    pc.hold(list(range(10)))
    pc.hold(list(range(500, 600)))
    assert pc.kept == []  # 10 tokens are not worth a slot
    pc.hold(list(range(700, 800)))
    pc.hold(list(range(900, 1000)))
    assert len(pc.kept) == 1 and pc.kept[0] == list(range(700, 800))  # least recently used freed


def test_make_room_and_forget_free_everything() -> None:
    pc, m = cache(n_ctx=1024)
    pc.hold(list(range(100)))
    pc.hold(list(range(200, 300)))
    assert pc.kept
    pc.make_room(1000)  # a job that might not fit next to the kept prefixes
    assert pc.kept == [] and all(m.seqs.get(s, []) == [] for s in (10, 11))
    pc.forget()
    assert pc.cached == [] and m.seqs[HOLDER] == [] and pc.hold(list(range(200, 300))) == 100
