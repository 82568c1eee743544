"""What a channel is given to send: one message to one destination, listing
one or more alerts (grouped within the group wait), with everything a person
needs to act on each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Event = Literal["firing", "resolved", "repeat"]


@dataclass(frozen=True)
class AlertView:
    """One alert as a message shows it (names resolved, error text redacted)."""

    alert_id: int
    rule_id: int
    rule_type: str
    fingerprint: str
    # The state this delivery tells ("firing" for a firing or repeat event,
    # "resolved" for a resolved one, whatever the alert's state by the time
    # it is sent), and the event itself.
    state: Literal["firing", "resolved"]
    event: Event
    summary: str
    client_id: int
    client_name: str
    pipeline_id: int
    pipeline_name: str
    platform: str
    environment: str
    fired_at: datetime
    resolved_at: datetime | None
    run_id: int | None
    # The latest run's error text, redacted and cut short; None when none.
    error_message: str | None
    # CHM_PUBLIC_URL + the pipeline's page; None without CHM_PUBLIC_URL.
    pipeline_url: str | None
    acknowledged_by: str | None = None


@dataclass(frozen=True)
class Message:
    """One send: ``key`` is ``X-CHM-Delivery``, the same on every retry."""

    key: str
    destination: str  # "kind:target", as the rule says
    kind: str
    target: str
    alerts: tuple[AlertView, ...]
    # Whose deliveries this message carries (alert_deliveries.id).
    delivery_ids: tuple[int, ...]
    # Where CHM's own pages are (CHM_PUBLIC_URL), for links; may be None.
    public_url: str | None = None

    @property
    def status(self) -> Literal["firing", "resolved"]:
        """``firing`` while any alert listed fires (Alertmanager's group status)."""
        return "firing" if any(a.state == "firing" for a in self.alerts) else "resolved"
