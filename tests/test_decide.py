"""The SQL stores' one consume decision against a plain model of the consume contract.

The model is ``Store.consume``'s contract written as dictionaries: a claim seen before
and unexpired replays its first answer (or is a Conflict with another fingerprint) and
changes nothing; otherwise the cost is granted iff it fits the total, a refusal counts
one rejection, the day's total becomes the request's, and a claim keeps this answer.

Sequences of consumes are cut into batches at random; each batch is decided by
``decide_batch`` on what the previous batches wrote back, as the stores do, so the
answers and the stored state must not depend on where the cuts fall.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from quotad.domain.models import ConsumeOutcome, IdempotencyClaim
from quotad.errors import Conflict
from quotad.storage.sql.decide import (
    Answer,
    ClaimKey,
    Consume,
    DayKey,
    DayRow,
    decide,
    decide_batch,
)

START = datetime(2024, 11, 7, 12, tzinfo=UTC)
DAYS = (date(2024, 11, 7), date(2024, 11, 8))


@dataclass
class Model:
    """Days and remembered answers, as the contract says they evolve."""

    days: dict[DayKey, tuple[int, int, int]] = field(default_factory=dict)
    claims: dict[ClaimKey, tuple[str, datetime, ConsumeOutcome]] = field(default_factory=dict)

    def consume(self, request: Consume) -> ConsumeOutcome | str:
        """The answer to ``request`` ("conflict" for a reused key); updates the model."""
        claim = request.claim
        if claim is not None:
            stored = self.claims.get((request.account_id, claim.key))
            if stored is not None and (request.now is None or request.now < stored[1]):
                if stored[0] != claim.fingerprint:
                    return "conflict"
                return stored[2]._replace(replayed=True)
        key = (request.account_id, request.service, request.day.isoformat())
        used, _, rejected = self.days.get(key, (0, 0, 0))
        granted = used + request.cost <= request.total
        if granted:
            used += request.cost
        else:
            rejected += 1
        self.days[key] = (used, request.total, rejected)
        outcome = ConsumeOutcome(granted, used, request.total, request.day)
        if claim is not None:
            self.claims[request.account_id, claim.key] = (
                claim.fingerprint,
                claim.expires_at,
                outcome,
            )
        return outcome


claims = st.none() | st.builds(
    IdempotencyClaim,
    key=st.sampled_from(("k1", "k2")),
    fingerprint=st.sampled_from(("fp-a", "fp-b")),
    expires_at=st.integers(min_value=0, max_value=6).map(lambda h: START + timedelta(hours=h)),
)
requests = st.builds(
    Consume,
    account_id=st.sampled_from(("acme", "globex")),
    service=st.sampled_from(("insights", "scoring")),
    day=st.sampled_from(DAYS),
    cost=st.integers(min_value=0, max_value=6),
    total=st.integers(min_value=0, max_value=12),
    claim=claims,
    now=st.none() | st.integers(min_value=0, max_value=6).map(lambda h: START + timedelta(hours=h)),
)


def answered(answer: ConsumeOutcome | Exception) -> ConsumeOutcome | str:
    """An answer as the model writes it."""
    if isinstance(answer, Conflict):
        return "conflict"
    assert isinstance(answer, ConsumeOutcome)
    return answer


@given(
    sequence=st.lists(requests, max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=30), max_size=6),
)
def test_batches_of_any_size_answer_and_store_as_the_model(
    sequence: list[Consume], cuts: list[int]
) -> None:
    """Batch after batch, every answer and the stored days and claims match the model."""
    model = Model()
    rows: dict[DayKey, DayRow] = {}
    seen: dict[ClaimKey, Answer] = {}
    bounds = sorted({0, len(sequence), *(c for c in cuts if c < len(sequence))})
    for start, end in itertools.pairwise(bounds):
        batch = sequence[start:end]
        decided = decide_batch(batch, rows, seen)
        assert [answered(a) for a in decided.answers] == [model.consume(r) for r in batch]
        rows.update(decided.rows)
        seen.update(decided.claims)
        assert {key: tuple(row) for key, row in rows.items()} == model.days
        assert {key: (a.fingerprint, a.expires_at, a.outcome) for key, a in seen.items()} == (
            model.claims
        )


@given(
    batch=st.lists(requests, max_size=12),
    stored=st.dictionaries(
        st.tuples(
            st.sampled_from(("acme", "globex")),
            st.sampled_from(("insights", "scoring")),
            st.sampled_from([d.isoformat() for d in DAYS]),
        ),
        st.builds(
            DayRow,
            st.integers(min_value=0, max_value=12),
            st.integers(min_value=0, max_value=12),
            st.integers(min_value=0, max_value=3),
        ),
    ),
)
def test_deciding_changes_nothing_it_is_given(
    batch: list[Consume], stored: dict[DayKey, DayRow]
) -> None:
    """``decide_batch`` returns what changed and leaves the rows it read as they were."""
    before = copy.deepcopy(stored)
    decided = decide_batch(batch, stored, {})
    assert stored == before
    assert set(decided.rows) <= {r.row_key for r in batch}


def test_a_replay_or_a_reused_key_changes_no_row() -> None:
    """A claim answered before, unexpired, replays or conflicts without a row or answer to write."""
    claim = IdempotencyClaim("k", "fp-a", START + timedelta(days=1))
    first = ConsumeOutcome(True, 3, 10, DAYS[0])
    seen = Answer("fp-a", claim.expires_at, first)
    request = Consume("acme", "insights", DAYS[1], 3, 10, claim, START)
    replay = decide(None, request, seen)
    assert (replay.answer, replay.row, replay.remember) == (
        first._replace(replayed=True),
        None,
        None,
    )
    reused = Consume(
        "acme", "insights", DAYS[0], 3, 10, IdempotencyClaim("k", "fp-b", claim.expires_at), START
    )
    conflict = decide(DayRow(3, 10, 0), reused, seen)
    assert isinstance(conflict.answer, Conflict)
    assert (conflict.row, conflict.remember) == (None, None)


def test_an_expired_claim_is_decided_afresh() -> None:
    """At or past its expiry a claim is a new request, and keeps the new answer."""
    claim = IdempotencyClaim("k", "fp-b", START + timedelta(days=2))
    seen = Answer("fp-a", START, ConsumeOutcome(False, 0, 10, DAYS[0]))
    decision = decide(
        DayRow(4, 10, 1), Consume("acme", "insights", DAYS[0], 5, 10, claim, START), seen
    )
    assert decision.answer == ConsumeOutcome(True, 9, 10, DAYS[0])
    assert decision.row == DayRow(9, 10, 1)
    assert decision.remember == Answer("fp-b", claim.expires_at, decision.answer)
