"""``/alerts`` and ``/silences`` (monitoring contract, "Alerts"; docs/alerts-api.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from chm.alerts import outbox, service
from chm.alerts.schemas import AcknowledgeBody, AlertOut, AlertState, SilenceCreate, SilenceOut
from chm.core.deps import ReadSession, WriteSession
from chm.core.errors import problem_responses
from chm.core.ids import AlertID, IdFilter, SilenceID
from chm.core.pagination import DEFAULT_LIMIT, CursorParam, LimitParam, Page
from chm.core.schemas import UTCTimestamp
from chm.core.timeutil import utcnow

router = APIRouter(tags=["alerts"])


def request_time() -> datetime:
    """The time a request is judged at (a silence's start, end and `active`);
    a dependency, so that tests fix it."""
    return utcnow()


Now = Annotated[datetime, Depends(request_time)]
Since = Annotated[UTCTimestamp | None, Query(description="fired_at >= since (RFC 3339)")]
Until = Annotated[
    UTCTimestamp | None, Query(description="fired_at < until (RFC 3339); after since")
]


@router.get("/alerts", response_model=Page[AlertOut])
def list_alerts(
    session: ReadSession,
    state: AlertState | None = None,
    client_id: IdFilter | None = None,
    pipeline_id: IdFilter | None = None,
    rule_id: IdFilter | None = None,
    since: Since = None,
    until: Until = None,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> Page[AlertOut]:
    """Alerts, newest first (fired_at, then id), each with its deliveries."""
    records, next_cursor = service.list_alerts(
        session,
        state=state.value if state is not None else None,
        client_id=client_id,
        pipeline_id=pipeline_id,
        rule_id=rule_id,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
    )
    return Page[AlertOut](
        items=[AlertOut.of(r.alert, r.deliveries) for r in records], next_cursor=next_cursor
    )


@router.get("/alerts/{alert_id}", response_model=AlertOut)
def get_alert(alert_id: AlertID, session: ReadSession) -> AlertOut:
    """One alert with its deliveries."""
    record = service.get_alert(session, alert_id)
    return AlertOut.of(record.alert, record.deliveries)


@router.post("/alerts/{alert_id}/acknowledge", response_model=AlertOut)
def acknowledge_alert(
    alert_id: AlertID, body: AcknowledgeBody, session: WriteSession, now: Now
) -> AlertOut:
    """Take an alert: no more repeat notifications; 409 when it has resolved."""
    outbox.acknowledge(session, alert_id, body.by, body.note or None, now)
    record = service.get_alert(session, alert_id)
    return AlertOut.of(record.alert, record.deliveries)


_LOCATION = {"Location": {"description": "The silence's path", "schema": {"type": "string"}}}


@router.post(
    "/silences",
    status_code=201,
    response_model=SilenceOut,
    responses={201: {"description": "The silence", "headers": _LOCATION}},
)
def create_silence(
    body: SilenceCreate, request: Request, response: Response, session: WriteSession, now: Now
) -> SilenceOut:
    """Silence the deliveries of a client's, a pipeline's or a rule's alerts
    (every field set must match) until `ends_at`."""
    silence = service.create_silence(session, body, now)
    response.headers["Location"] = str(
        request.app.url_path_for("get_silence", silence_id=str(silence.id))
    )
    return SilenceOut.of(silence, now)


@router.get("/silences", response_model=Page[SilenceOut])
def list_silences(
    session: ReadSession,
    now: Now,
    active: Annotated[
        bool | None, Query(description="Only those active (or not) at the time of the request")
    ] = None,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> Page[SilenceOut]:
    """Silences, newest first."""
    rows, next_cursor = service.list_silences(
        session, active=active, now=now, limit=limit, cursor=cursor
    )
    return Page[SilenceOut](items=[SilenceOut.of(s, now) for s in rows], next_cursor=next_cursor)


@router.get("/silences/{silence_id}", response_model=SilenceOut)
def get_silence(silence_id: SilenceID, session: ReadSession, now: Now) -> SilenceOut:
    """One silence."""
    return SilenceOut.of(service.get_silence(session, silence_id), now)


@router.delete(
    "/silences/{silence_id}", response_model=SilenceOut, responses=problem_responses(409)
)
def end_silence(silence_id: SilenceID, session: WriteSession, now: Now) -> SilenceOut:
    """End a silence now (`ends_at` = now) and answer it; 409 when it has already ended."""
    return SilenceOut.of(service.end_silence(session, silence_id, now), now)
