"""What the webhook and alert pages show, read from the alert store (no HTML here).

Reads go straight to ``ctx.stores.alerts`` as the other pages read the records; every
change goes through ``quotad.service.webhooks``, which audits it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from quotad.domain.webhooks import AlertEvent, Attempt, Delivery, WebhookEndpoint
from quotad.service import webhooks
from quotad.service.context import Context

ALERT_ROWS = 50
DELIVERY_ROWS = 50
RESPONSE_HEAD = 120  # characters of a receiver's answer shown with its attempt


def when(value: datetime | None) -> str:
    """A time as the pages write it (UTC, to the second), or a dash."""
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True, slots=True)
class EndpointRow:
    """An endpoint as the pages list it: never its secret, only the secret's hint."""

    endpoint: WebhookEndpoint

    @property
    def hint(self) -> str:
        """The secret's form and last four characters."""
        return webhooks.secret_hint(self.endpoint.secret)

    @property
    def status(self) -> str:
        """``enabled``, ``failing`` (enabled, its deliveries failing) or ``disabled``."""
        if self.endpoint.disabled_at is not None:
            return "disabled"
        return "failing" if self.endpoint.failing_since is not None else "enabled"

    @property
    def enabled(self) -> bool:
        """Whether deliveries are sent to it."""
        return self.endpoint.disabled_at is None


@dataclass(frozen=True, slots=True)
class AlertRow:
    """An alert event in words: what it is about, whichever its type."""

    event: AlertEvent

    def _text(self, name: str) -> str:
        value = self.event.data.get(name)
        return "—" if value is None else str(value)

    @property
    def limit(self) -> str:
        """The limit's name (a quota's, e.g. ``insights.day``), or a dash."""
        return self._text("limit")

    @property
    def threshold(self) -> str:
        """The threshold crossed, as a percentage, or a dash."""
        value = self.event.data.get("threshold")
        return "—" if value is None else f"{value}%"

    @property
    def window(self) -> str:
        """The window the event counted in (start to reset), or a dash."""
        start, reset = self.event.data.get("window_start"), self.event.data.get("reset")
        return "—" if start is None else f"{start} to {reset}"

    @property
    def used(self) -> str:
        """Use against the total when the event was noticed, or a dash."""
        used, total = self.event.data.get("used"), self.event.data.get("total")
        return "—" if used is None else f"{used} of {total}"

    @property
    def detail(self) -> str:
        """What else identifies the event: its key, a key's expiry, an endpoint."""
        parts = [
            f"{name.replace('_', ' ')} {self.event.data[name]}"
            for name in ("key_id", "expires_at", "endpoint_id", "reason", "balance")
            if self.event.data.get(name) is not None
        ]
        return ", ".join(parts) or "—"


@dataclass(frozen=True, slots=True)
class AlertsPage:
    """A page of alert events, newest first, and the id to continue before."""

    rows: list[AlertRow]
    next_before: str | None


async def alerts_page(
    ctx: Context, account_id: str | None = None, before: str | None = None
) -> AlertsPage:
    """Up to ``ALERT_ROWS`` events of one account, or of all, newest first."""
    found = await ctx.stores.alerts.alert_events(ALERT_ROWS + 1, before or None, account_id)
    more = len(found) > ALERT_ROWS
    found = found[:ALERT_ROWS]
    return AlertsPage([AlertRow(e) for e in found], found[-1].id if more and found else None)


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One attempt of a delivery as its table shows it."""

    attempt: Attempt

    @property
    def outcome(self) -> str:
        """The HTTP status answered, or that there was no answer."""
        code = self.attempt.status_code
        return "no answer" if code is None else str(code)

    @property
    def response_head(self) -> str:
        """The start of the receiver's answer."""
        text = self.attempt.response
        return text if len(text) <= RESPONSE_HEAD else text[: RESPONSE_HEAD - 1] + "…"


@dataclass(frozen=True, slots=True)
class DeliveriesPage:
    """A page of an endpoint's deliveries, newest first, and the id to continue before."""

    deliveries: list[Delivery]
    next_before: str | None

    def attempts(self, delivery: Delivery) -> list[AttemptRow]:
        """A delivery's attempts, newest first."""
        return [AttemptRow(a) for a in reversed(delivery.attempts)]


async def deliveries_page(
    ctx: Context, endpoint_id: str, before: str | None = None
) -> DeliveriesPage:
    """Up to ``DELIVERY_ROWS`` of an endpoint's deliveries with their attempts."""
    found = await webhooks.deliveries(ctx, endpoint_id, DELIVERY_ROWS + 1, before or None)
    more = len(found) > DELIVERY_ROWS
    found = found[:DELIVERY_ROWS]
    return DeliveriesPage(found, found[-1].id if more and found else None)
