"""Alert rules: stored conditions for future alerting (FR-008..FR-010, DI-007, DI-008)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from chm.alert_rules.schemas import AlertRuleCreate, AlertRuleUpdate
from chm.core.changes import apply_changes
from chm.core.errors import Conflict, FieldIssue, ValidationFailed
from chm.core.keyset import Keyset, SortKey, keyset_page
from chm.core.lookup import flush_or_conflict, get_or_404
from chm.models import AlertRule, Client, Pipeline, RuleType

# What each rule type does with each parameter: requires it, accepts it (and
# ignores it), or refuses any value but null (the create bodies say the same).
ParameterUse = Literal["required", "optional", "not_used"]
PARAMETERS: dict[RuleType, dict[str, ParameterUse]] = {
    RuleType.on_failure: {"threshold": "optional", "window_minutes": "optional"},
    RuleType.failures_in_window: {"threshold": "required", "window_minutes": "required"},
    RuleType.consecutive_failures: {"threshold": "required", "window_minutes": "not_used"},
    RuleType.long_running: {"threshold": "required", "window_minutes": "not_used"},
    RuleType.duration_anomaly: {"threshold": "not_used", "window_minutes": "not_used"},
    RuleType.missed_schedule: {"threshold": "not_used", "window_minutes": "not_used"},
}

# In creation order.
KEYSET = Keyset("alert-rules", (SortKey(AlertRule.id, int),))


class DuplicateAlertRule(Conflict):
    title = "Duplicate enabled alert rule"
    type_slug = "duplicate-alert-rule"


@dataclass
class RuleValues:
    """A rule as it would be stored."""

    rule_type: RuleType
    client_id: int | None
    pipeline_id: int | None
    destination: str
    threshold: int | None
    window_minutes: int | None
    is_enabled: bool


def scope_reference_issues(
    session: Session, client_id: int | None, pipeline_id: int | None
) -> list[FieldIssue]:
    """A scope's references checked: a client and a pipeline that exist, the
    pipeline of that client (the rules' and the silences' scope)."""
    issues: list[FieldIssue] = []
    client = pipeline = None
    if client_id is not None:
        client = session.get(Client, client_id)
        if client is None:
            issues.append(
                FieldIssue("client_id", "not_found", f"client '{client_id}' does not exist")
            )
    if pipeline_id is not None:
        pipeline = session.get(Pipeline, pipeline_id)
        if pipeline is None:
            issues.append(
                FieldIssue("pipeline_id", "not_found", f"pipeline '{pipeline_id}' does not exist")
            )
    if client is not None and pipeline is not None and pipeline.client_id != client.id:
        issues.append(
            FieldIssue(
                "pipeline_id",
                "not_of_client",
                f"pipeline '{pipeline_id}' does not belong to client '{client_id}'",
            )
        )
    return issues


def _resolve(session: Session, values: RuleValues) -> dict[str, Any]:
    """Validate a whole rule; every issue at once, field by field (AC-002)."""
    issues: list[FieldIssue] = []
    if values.client_id is None and values.pipeline_id is None:
        message = "a rule needs a client_id, a pipeline_id, or both"
        issues += [
            FieldIssue("client_id", "scope_required", message),
            FieldIssue("pipeline_id", "scope_required", message),
        ]
    issues += scope_reference_issues(session, values.client_id, values.pipeline_id)
    for field, use in PARAMETERS[values.rule_type].items():
        value = getattr(values, field)
        if use == "required" and value is None:
            issues.append(
                FieldIssue(field, "required", f"{field} is required for {values.rule_type} rules")
            )
        elif use == "not_used" and value is not None:
            issues.append(
                FieldIssue(field, "not_used", f"{field} is not used by {values.rule_type} rules")
            )
    if issues:
        raise ValidationFailed(issues)
    return {
        "rule_type": values.rule_type.value,
        "client_id": values.client_id,
        "pipeline_id": values.pipeline_id,
        "destination": values.destination,
        "threshold": values.threshold,
        "window_minutes": values.window_minutes,
        "is_enabled": values.is_enabled,
    }


def _check_no_duplicate(session: Session, fields: dict[str, Any], exclude_id: int | None) -> None:
    """DI-008, for a friendly message; the partial unique indexes guarantee it."""
    if not fields["is_enabled"]:
        return
    query = sa.select(AlertRule.id).where(
        AlertRule.is_enabled.is_(True),
        AlertRule.rule_type == fields["rule_type"],
        AlertRule.destination == fields["destination"],
    )
    if fields["pipeline_id"] is not None:
        query = query.where(AlertRule.pipeline_id == fields["pipeline_id"])
        scope = f"pipeline {fields['pipeline_id']}"
    else:
        query = query.where(
            AlertRule.pipeline_id.is_(None), AlertRule.client_id == fields["client_id"]
        )
        scope = f"client {fields['client_id']}"
    if exclude_id is not None:
        query = query.where(AlertRule.id != exclude_id)
    existing = session.scalar(query.limit(1))
    if existing is not None:
        raise DuplicateAlertRule(
            f"enabled rule {existing} already has the same {scope} scope, rule_type and destination"
        )


def _flush_or_conflict(session: Session) -> None:
    flush_or_conflict(
        session,
        DuplicateAlertRule("an enabled rule with the same scope, rule_type and destination exists"),
    )


def get_rule(session: Session, rule_id: int) -> AlertRule:
    return get_or_404(session, AlertRule, rule_id, "alert rule")


def create_rule(session: Session, data: AlertRuleCreate) -> AlertRule:
    # Each body type names its rule_type by its value: the rule takes the enum.
    values = data.model_dump() | {"rule_type": RuleType(data.rule_type)}
    fields = _resolve(session, RuleValues(**values))
    _check_no_duplicate(session, fields, exclude_id=None)
    rule = AlertRule(**fields)
    session.add(rule)
    _flush_or_conflict(session)
    return rule


def _current_values(rule: AlertRule) -> dict[str, Any]:
    return {
        "rule_type": RuleType(rule.rule_type),
        "client_id": rule.client_id,
        "pipeline_id": rule.pipeline_id,
        "destination": rule.destination,
        "threshold": rule.threshold,
        "window_minutes": rule.window_minutes,
        "is_enabled": rule.is_enabled,
    }


def update_rule(session: Session, rule_id: int, data: AlertRuleUpdate) -> AlertRule:
    """Apply a partial change, then validate the rule as a whole."""
    rule = get_rule(session, rule_id)
    merged = _current_values(rule) | data.model_dump(exclude_unset=True)
    fields = _resolve(session, RuleValues(**merged))
    _check_no_duplicate(session, fields, exclude_id=rule.id)
    if apply_changes(rule, fields):
        _flush_or_conflict(session)
    return rule


def set_enabled(session: Session, rule_id: int, enabled: bool) -> AlertRule:
    return update_rule(session, rule_id, AlertRuleUpdate(is_enabled=enabled))


def delete_rule(session: Session, rule_id: int) -> None:
    session.delete(get_rule(session, rule_id))
    session.flush()


def list_rules(
    session: Session,
    *,
    client_id: int | None,
    pipeline_id: int | None,
    rule_type: RuleType | None,
    is_enabled: bool | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[AlertRule], str | None]:
    query = sa.select(AlertRule)
    if client_id is not None:
        query = query.where(AlertRule.client_id == client_id)
    if pipeline_id is not None:
        query = query.where(AlertRule.pipeline_id == pipeline_id)
    if rule_type is not None:
        query = query.where(AlertRule.rule_type == rule_type.value)
    if is_enabled is not None:
        query = query.where(AlertRule.is_enabled.is_(is_enabled))
    return keyset_page(session, KEYSET, query, cursor=cursor, limit=limit)
