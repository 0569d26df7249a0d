"""Results: sections of subjects, their targets, the markdown tables and the JSON.

A subject's numbers are the medians over its repetitions (throughput, p50 and p99 each
taken separately). A ratio is computed per repetition, quotad's throughput over the
peer's measured in the same repetition (the two run one after the other, so they share
whatever else the machine was doing then); the ratio reported is the median of those,
with their spread. A target is met when that median reaches it.
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

    def by_rep(self) -> dict[int, Measurement]:
        """Its runs by repetition."""
        return {run.rep: run for run in self.runs}

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "description": self.description,
            "median": {"ops_per_s": self.ops, "p50_ms": self.p50, "p99_ms": self.p99},
            "runs": [r.as_json() for r in self.runs],
            "error": self.error,
        }


def others_cores(run: Measurement) -> float | None:
    """Cores kept busy by other programs during ``run`` (see cpu.py), if measured."""
    others, wall = run.cpu.get("others_s"), run.cpu.get("wall_s")
    return others / wall if others is not None and wall else None


# The CPU of the benchmark's own parties, as cpu.py names them (the rest is the machine's).
NOT_OURS = ("wall_s", "busy_s", "steal_s", "others_s", "disk_busy_s")


def cpu_per_op(run: Measurement) -> float | None:
    """CPU seconds the subject's parties spent per operation (its process, its server,
    Redis, its load generator): unlike throughput, this hardly moves with contention.

    For in-process subjects it includes the untimed warm-up and set-up, a like share
    for every subject of a section."""
    spent = sum(
        value for name, value in run.cpu.items() if name.endswith("_s") and name not in NOT_OURS
    )
    return spent / run.ops if run.cpu and run.ops and spent > 0 else None


@dataclass
class Target:
    """A comparison of a subject with a peer (ratio) or with an absolute p99 bound.

    ``min_ratio``: met when the median of the per-repetition ratios subject/peer is at
    least it. ``max_p99_ms``: met when the median of the subject's per-repetition p99 is at
    most it. Neither: the ratio is reported without a target.
    """

    subject: str
    peer: str | None = None
    min_ratio: float | None = None
    max_p99_ms: float | None = None

    def per_rep(self, subjects: dict[str, Subject]) -> dict[int, float]:
        """The ratio (or the p99, for a latency bound) of each repetition measured."""
        mine = subjects[self.subject].by_rep()
        if self.peer is None:
            return {rep: run.p99_ms for rep, run in mine.items() if run.p99_ms is not None}
        theirs = subjects[self.peer].by_rep()
        return {
            rep: run.ops_per_s / theirs[rep].ops_per_s
            for rep, run in sorted(mine.items())
            if rep in theirs and run.ops_per_s and theirs[rep].ops_per_s
        }

    def cpu_ratios(self, subjects: dict[str, Subject]) -> list[float]:
        """Per repetition: the peer's CPU per operation over the subject's."""
        if self.peer is None:
            return []
        mine, theirs = subjects[self.subject].by_rep(), subjects[self.peer].by_rep()
        ratios = []
        for rep, run in sorted(mine.items()):
            ours = cpu_per_op(run)
            peer = cpu_per_op(theirs[rep]) if rep in theirs else None
            if ours and peer:
                ratios.append(peer / ours)
        return ratios

    def contention(self, subjects: dict[str, Subject]) -> float | None:
        """The median of the cores other programs kept busy during the compared runs."""
        names = [self.subject] if self.peer is None else [self.subject, self.peer]
        busy = [others_cores(run) for name in names for run in subjects[name].runs]
        return median_or_none(busy)

    def evaluate(self, subjects: dict[str, Subject]) -> dict[str, Any]:
        """The median ratio, its spread, the target's text and whether it is met.

        ``met`` is ``None`` when nothing could be measured; ``reps_met`` counts the
        repetitions that on their own reach the target.
        """
        values = self.per_rep(subjects)
        middle = statistics.median(values.values()) if values else None
        ratio = middle if self.peer is not None else None
        met: bool | None = None
        reps_met: int | None = None
        text = "—"
        if self.min_ratio is not None:
            text = f"≥ {self.min_ratio:g}{TIMES}"
            met = None if middle is None else middle >= self.min_ratio
            reps_met = sum(v >= self.min_ratio for v in values.values())
        if self.max_p99_ms is not None:
            text = f"p99 ≤ {self.max_p99_ms:g} ms"
            met = None if middle is None else middle <= self.max_p99_ms
            reps_met = sum(v <= self.max_p99_ms for v in values.values())
        mine, theirs = subjects[self.subject], subjects.get(self.peer or "")
        return {
            "subject": self.subject,
            "peer": self.peer,
            "ratio": ratio,
            "per_rep": {str(rep): v for rep, v in values.items()},
            "min": min(values.values()) if values else None,
            "max": max(values.values()) if values else None,
            "ratio_of_medians": (
                mine.ops / theirs.ops if theirs and mine.ops and theirs.ops else None
            ),
            "target": text,
            "min_ratio": self.min_ratio,
            "max_p99_ms": self.max_p99_ms,
            "met": met,
            "reps_met": reps_met,
            "others_cores": self.contention(subjects),
            "cpu_ratio": median_or_none(self.cpu_ratios(subjects)),
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


def _median_text(row: dict[str, Any], latency: bool) -> str:
    values = list(row["per_rep"].values())
    if not values:
        return "—"
    return f"{statistics.median(values):.3f} ms" if latency else f"{row['ratio']:.2f}{TIMES}"


def _spread_text(row: dict[str, Any], latency: bool) -> str:
    values = list(row["per_rep"].values())
    if not values:
        return "—"
    unit = " ms" if latency else TIMES
    each = " ".join(f"{v:.2f}" for v in values)
    return f"{row['min']:.2f} to {row['max']:.2f}{unit} ({each})"


def targets_table(sections: list[Section]) -> str:
    """Every target: the median over the repetitions, the spread, whether it is met, how
    many cores other programs kept busy meanwhile (the median over the runs), and the
    peer's CPU per operation over quotad's (the median over the repetitions)."""
    lines = [
        "| section | target | median | spread: min to max (each repetition) | met? | others "
        "| CPU/op |",
        "|---|---|---:|---|---|---:|---:|",
    ]
    for section in sections:
        if section.status != "ok":
            continue
        for target in section.targets:
            if target.min_ratio is None and target.max_p99_ms is None:
                continue
            row = target.evaluate(section.subjects)
            latency = target.peer is None
            what = target.subject if latency else f"{target.subject} vs {target.peer}"
            verdict = "—" if row["met"] is None else ("yes" if row["met"] else "**no**")
            if row["per_rep"]:
                verdict += f" ({row['reps_met']}/{len(row['per_rep'])} reps)"
            others, cpu = row["others_cores"], row["cpu_ratio"]
            cells = [
                section.name,
                f"{what} {row['target']}",
                _median_text(row, latency),
                _spread_text(row, latency),
                verdict,
                "—" if others is None else f"{others:.2f}",
                "—" if cpu is None else f"{cpu:.2f}{TIMES}",
            ]
            lines.append("| " + " | ".join(_cell(c, 220) for c in cells) + " |")
    return "\n".join(lines)
