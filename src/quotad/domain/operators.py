"""Who administers a deployment, and what they changed: operator tokens and the audit log.

A named operator token has one role. ``admin`` may do everything; ``read`` may read
everything an operator can (every ``GET`` of the operator API, the dashboard without its
buttons); ``verify`` may only meter (``POST /v1/verify``, ``POST /v1/events``). Like an API
key, a token is stored only as its SHA-256 digest and shown once, at creation.

An audit entry says who (``actor``) did what (``action``) to which record (``target``,
written ``<kind>:<id>``), with the record's view before and after, never a secret.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class Role(enum.StrEnum):
    """What a token may do."""

    ADMIN = "admin"
    READ = "read"
    VERIFY = "verify"


class Access(enum.Enum):
    """The kinds of route a role is checked against."""

    READ = "read"  # an operator GET
    WRITE = "write"  # any other operator call
    METER = "meter"  # verify and events


ALLOWED: dict[Role, frozenset[Access]] = {
    Role.ADMIN: frozenset(Access),
    Role.READ: frozenset({Access.READ}),
    Role.VERIFY: frozenset({Access.METER}),
}


@dataclass(frozen=True, slots=True)
class OperatorToken:
    """A named operator token as stored: its digest and display hint, never the token."""

    id: str
    name: str
    role: Role
    digest: str
    prefix: str
    last4: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def hint(self) -> str:
        """What is shown of the token after creation."""
        return f"{self.prefix}_…{self.last4}"

    def revoked(self, now: datetime) -> bool:
        """Whether the token has been revoked by ``now``."""
        return self.revoked_at is not None and now >= self.revoked_at


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change, as the audit log keeps it (append-only).

    Ids sort in the order the entries were written (see ``quotad.service.audit``), so the
    log is read newest first by id.
    """

    id: str
    at: datetime
    actor: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Which entries to read: up to ``limit``, older than ``before_id``, matching the rest.

    ``targets`` empty means any target; otherwise an entry's target is one of them (the
    dashboard reads an account's entries with those of its keys).
    """

    limit: int
    before_id: str | None = None
    targets: tuple[str, ...] = ()
    actor: str | None = None
    since: datetime | None = None

    def matches(self, entry: AuditEntry) -> bool:
        """Whether ``entry`` passes the filters (the limit aside)."""
        return (
            (self.before_id is None or entry.id < self.before_id)
            and (not self.targets or entry.target in self.targets)
            and (self.actor is None or entry.actor == self.actor)
            and (self.since is None or entry.at >= self.since)
        )
