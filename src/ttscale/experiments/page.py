"""An experiment's page: markdown with its claim, measurement, verdict, tables and figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Page:
    name: str
    title: str
    claim: str
    """The published result, in a few sentences, with its source."""
    verdict: str
    """One paragraph: does it hold here, with the numbers and their intervals."""
    sections: list[str] = field(default_factory=list)
    """Further markdown: method, tables, figure references."""
    command: str = ""

    def markdown(self) -> str:
        parts = [f"# {self.title}", "", f"Reproduce: `{self.command}`" if self.command else "", "",
                 "## The claim", "", self.claim, "", "## Here", "", self.verdict, ""]
        for s in self.sections:
            parts += [s, ""]
        return "\n".join(parts).rstrip() + "\n"

    def write(self, out_dir: Path) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{self.name}.md"
        path.write_text(self.markdown())
        return path


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def ci(lo: float, hi: float, digits: int = 3) -> str:
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]"
