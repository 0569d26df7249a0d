"""Results: sections of subjects, their targets, the markdown table and the JSON.

A subject's numbers are the medians over its repetitions (throughput, p50 and p99 each
taken separately). A ratio is quotad's median throughput over the peer's.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from common import Measurement, fmt_ms, fmt_ops, median_or_none

TIMES = "\N{MULTIPLICATION SIGN}"


@dataclass
class Subject:
    """One thing measured in a section, with every repetition's measurement."""

    name: str
    description: str
    runs: list[Measurement] = field(default_factory=list)
    error: str | None = None  # set when it could not be measured (the reason is printed)
    label: str | None = None  # the table's text for it, when more than its name

    @property
    def ops(self) -> float | None:
        """Median throughput."""
        return statistics.median([r.ops_per_s for r in self.runs]) if self.runs else None

    @property
    def p50(self) -> float | None:
        """Median of the repetitions' p50 latencies (ms)."""
        return median_or_none([r.p50_ms for r in self.runs])

    @property
    def p99(self) -> float | None:
        """Median of the repetitions' p99 latencies (ms)."""
        return median_or_none([r.p99_ms for r in self.runs])

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "description": self.description,
            "median": {"ops_per_s": self.ops, "p50_ms": self.p50, "p99_ms": self.p99},
            "runs": [r.as_json() for r in self.runs],
            "error": self.error,
        }


@dataclass
class Target:
    """A comparison of a subject with a peer (ratio) or with an absolute p99 bound.

    ``min_ratio``: met when subject/peer throughput >= it. ``max_p99_ms``: met when the
    subject's median p99 <= it. Neither: the ratio is reported without a target.
    """

    subject: str
    peer: str | None = None
    min_ratio: float | None = None
    max_p99_ms: float | None = None

    def evaluate(self, subjects: dict[str, Subject]) -> dict[str, Any]:
        """The ratio, the target's text and whether it is met (``None``: not measurable)."""
        mine = subjects[self.subject]
        ratio: float | None = None
        met: bool | None = None
        text = "—"
        if self.peer is not None:
            theirs = subjects[self.peer]
            if mine.ops and theirs.ops:
                ratio = mine.ops / theirs.ops
            if self.min_ratio is not None:
                text = f"≥ {self.min_ratio:g}{TIMES}"
                met = None if ratio is None else ratio >= self.min_ratio
        if self.max_p99_ms is not None:
            text = f"p99 ≤ {self.max_p99_ms:g} ms"
            met = None if mine.p99 is None else mine.p99 <= self.max_p99_ms
        return {
            "subject": self.subject,
            "peer": self.peer,
            "ratio": ratio,
            "target": text,
            "min_ratio": self.min_ratio,
            "max_p99_ms": self.max_p99_ms,
            "met": met,
        }


@dataclass
class Section:
    """One section's subjects, targets and notes."""

    name: str
    status: str = "ok"  # ok | skipped | failed
    reason: str | None = None
    subjects: dict[str, Subject] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def subject(self, name: str, description: str) -> Subject:
        """Declare a subject (in table order)."""
        self.subjects[name] = Subject(name, description)
        return self.subjects[name]

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "status": self.status,
            "reason": self.reason,
            "seconds": round(self.seconds, 1),
            "subjects": {name: s.as_json() for name, s in self.subjects.items()},
            "comparisons": [t.evaluate(self.subjects) for t in self.targets],
            "notes": self.notes,
        }


def table_rows(sections: list[Section]) -> list[dict[str, Any]]:
    """One row per subject, or per comparison for subjects compared with something."""
    rows: list[dict[str, Any]] = []
    for section in sections:
        if section.status != "ok":
            rows.append({"section": section.name, "subject": f"{section.status}: {section.reason}"})
            continue
        for name, subject in section.subjects.items():
            base = {
                "section": section.name,
                "subject": subject.label or name,
                "ops_per_s": subject.ops,
                "p50_ms": subject.p50,
                "p99_ms": subject.p99,
            }
            if subject.error is not None:
                state = "partly measured" if subject.runs else "not measured"
                rows.append({**base, "subject": f"{name} ({state}: {subject.error})"})
                continue
            compared = [t.evaluate(section.subjects) for t in section.targets if t.subject == name]
            # The comparison's own "subject" is the key; the row keeps the label.
            rows.extend({**c, **base} for c in compared) if compared else rows.append(base)
    return rows


def _cell(text: str, limit: int = 160) -> str:
    # One line per row, and an error's full text belongs in the JSON, not the table.
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results as a markdown table (pasted into the README as is)."""
    header = ["section", "subject", "ops/s", "p50 ms", "p99 ms", "vs peer", "ratio", "target"]
    header.append("met?")
    lines = [
        "| " + " | ".join(header) + " |",
        "|---|---|---:|---:|---:|---|---:|---|---|",
    ]
    for row in rows:
        ratio = row.get("ratio")
        met = row.get("met")
        cells = [
            row["section"],
            row["subject"],
            fmt_ops(row.get("ops_per_s")),
            fmt_ms(row.get("p50_ms")),
            fmt_ms(row.get("p99_ms")),
            row.get("peer") or "—",
            "—" if ratio is None else f"{ratio:.2f}{TIMES}",
            row.get("target") or "—",
            "—" if met is None else ("yes" if met else "**no**"),
        ]
        lines.append("| " + " | ".join(_cell(str(c)) for c in cells) + " |")
    return "\n".join(lines)
