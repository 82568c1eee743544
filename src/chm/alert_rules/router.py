from __future__ import annotations

from fastapi import APIRouter, Response

from chm.alert_rules import service
from chm.alert_rules.schemas import AlertRuleCreate, AlertRuleOut, AlertRuleUpdate
from chm.core.deps import ReadSession, WriteSession
from chm.core.ids import AlertRuleID, IdFilter
from chm.core.pagination import DEFAULT_LIMIT, CursorParam, LimitParam, Page
from chm.models import RuleType

router = APIRouter(prefix="/alert-rules", tags=["alert rules"])


@router.post("", status_code=201, response_model=AlertRuleOut)
def create_rule(body: AlertRuleCreate, session: WriteSession) -> AlertRuleOut:
    """Create an alert rule scoped to a client, a pipeline, or both (pipeline wins)."""
    return AlertRuleOut.model_validate(service.create_rule(session, body))


@router.get("", response_model=Page[AlertRuleOut])
def list_rules(
    session: ReadSession,
    client_id: IdFilter | None = None,
    pipeline_id: IdFilter | None = None,
    rule_type: RuleType | None = None,
    is_enabled: bool | None = None,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> Page[AlertRuleOut]:
    """List alert rules in creation order; filters match each field exactly."""
    rows, next_cursor = service.list_rules(
        session,
        client_id=client_id,
        pipeline_id=pipeline_id,
        rule_type=rule_type,
        is_enabled=is_enabled,
        limit=limit,
        cursor=cursor,
    )
    return Page[AlertRuleOut](
        items=[AlertRuleOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.get("/{rule_id}", response_model=AlertRuleOut)
def get_rule(rule_id: AlertRuleID, session: ReadSession) -> AlertRuleOut:
    """One alert rule."""
    return AlertRuleOut.model_validate(service.get_rule(session, rule_id))


@router.patch("/{rule_id}", response_model=AlertRuleOut)
def update_rule(rule_id: AlertRuleID, body: AlertRuleUpdate, session: WriteSession) -> AlertRuleOut:
    """Change any writable field; the rule is validated as a whole after the change."""
    return AlertRuleOut.model_validate(service.update_rule(session, rule_id, body))


@router.post("/{rule_id}/enable", response_model=AlertRuleOut)
def enable_rule(rule_id: AlertRuleID, session: WriteSession) -> AlertRuleOut:
    """Enable a rule (409 if an enabled duplicate exists)."""
    return AlertRuleOut.model_validate(service.set_enabled(session, rule_id, True))


@router.post("/{rule_id}/disable", response_model=AlertRuleOut)
def disable_rule(rule_id: AlertRuleID, session: WriteSession) -> AlertRuleOut:
    """Disable a rule."""
    return AlertRuleOut.model_validate(service.set_enabled(session, rule_id, False))


@router.delete("/{rule_id}", status_code=204, response_class=Response)
def delete_rule(rule_id: AlertRuleID, session: WriteSession) -> Response:
    """Delete a rule for good."""
    service.delete_rule(session, rule_id)
    return Response(status_code=204)
