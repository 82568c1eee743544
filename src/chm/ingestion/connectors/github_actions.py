"""GitHub Actions (REST API version 2022-11-28):
``GET /repos/{owner}/{repo}/actions/workflows/{workflow}/runs``.

A pipeline's ``external_id`` is ``owner/repo/workflow``, the workflow being
its id or its file name (``acme/etl/nightly.yml``). The first page is asked
with ``per_page=100``; the next pages are the ``rel="next"`` URLs of the
``Link`` header, followed as given (they must stay under ``base_url``), until
there is none. A page is ``{"total_count": n, "workflow_runs": [...]}``.

Incremental: ``created=>=<time>``, on the run's creation, so the engine holds
the watermark at the oldest run still queued or in progress. GitHub answers
at most 1,000 runs to a query with ``created``; a pipeline with more changes
than that between two ingestions needs ``chm ingest --full``.

Per run: ``id`` (a re-run keeps it and raises ``run_attempt``, the attempt
marker: GitHub's ``updated_at`` has whole seconds, so a re-run asked in the
second the run completed would not show as newer by it); ``status``
(requested, queued, pending, waiting, in_progress, completed) and, once
completed, ``conclusion`` (success, failure, neutral, cancelled, skipped,
timed_out, action_required, stale, startup_failure), kept as
``source_status`` ``status/conclusion``; ``run_started_at`` (else
``created_at``) as the start; ``updated_at`` as the end of a completed run and
as the source update time. Rate limits: a 403 or 429 with
``x-ratelimit-remaining: 0`` waits until ``x-ratelimit-reset`` (the engine's
``fetch``). Nothing in a workflow run is computed at read time.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import StringConstraints

from chm.core.status import TERMINAL_STATUSES, RunStatus
from chm.core.timeutil import isoformat_z
from chm.ingestion.connectors.base import (
    BadExternalId,
    Fetched,
    Page,
    PageRequest,
    Window,
    link_next,
    run_list,
)
from chm.ingestion.connectors.registry import Platform, register
from chm.ingestion.normalize import (
    SourceRun,
    attempt_number,
    map_status,
    parse_timestamp,
    run_identity,
    status_word,
)
from chm.ingestion.sources import SourceBase


class GithubActionsSource(SourceBase):
    """GitHub REST API workflow runs; ``base_url`` is ``https://api.github.com``
    (or a GitHub Enterprise Server's ``https://HOST/api/v3``)."""

    platform: Literal["github_actions"]
    api_version: Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$")] = "2022-11-28"


PER_PAGE = 100
_EXTERNAL_ID = re.compile(r"^[A-Za-z0-9-]+/[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$")

GITHUB_STATUS = {
    **dict.fromkeys(("requested", "queued", "pending", "waiting"), RunStatus.queued),
    "in_progress": RunStatus.running,
}
GITHUB_CONCLUSION = {
    # A neutral conclusion passes a required check, as a success does.
    **dict.fromkeys(("success", "neutral"), RunStatus.success),
    # stale: GitHub gave up on a run that never completed (14 days).
    **dict.fromkeys(("failure", "timed_out", "startup_failure", "stale"), RunStatus.failed),
    "cancelled": RunStatus.cancelled,
    "skipped": RunStatus.skipped,
    # action_required: the run waits for someone to approve it.
    "action_required": RunStatus.queued,
}


class GithubActionsConnector:
    def __init__(self, source: GithubActionsSource, external_id: str, window: Window) -> None:
        if not _EXTERNAL_ID.match(external_id):
            raise BadExternalId(
                f"external_id {external_id!r} is not owner/repo/workflow "
                "(the workflow's id or file name)"
            )
        owner, repo, workflow = external_id.split("/")
        self.base = source.base
        self.url = f"{source.base}/repos/{owner}/{repo}/actions/workflows/{workflow}/runs"
        self.headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": source.api_version,
        }
        self.since = window.since

    def page_request(self, cursor: str | None) -> PageRequest:
        if cursor is not None:
            return PageRequest("GET", cursor, headers=self.headers)
        params = {"per_page": str(PER_PAGE)}
        if self.since is not None:
            params["created"] = ">=" + isoformat_z(self.since.replace(microsecond=0))
        return PageRequest("GET", self.url, params=params, headers=self.headers)

    def read_page(self, fetched: Fetched) -> Page:
        runs = run_list(fetched.body, "workflow_runs", required=True)
        return Page(runs, link_next(fetched.headers, self.base))

    def map_run(self, raw: dict[str, Any]) -> SourceRun:
        state = status_word(raw.get("status"))
        if state.lower() == "completed":
            conclusion = status_word(raw.get("conclusion"), "conclusion")
            status = map_status(conclusion, GITHUB_CONCLUSION)
            words = f"{state}/{conclusion}"
        else:
            status = map_status(state, GITHUB_STATUS)
            words = state
        updated_at = parse_timestamp(raw.get("updated_at"), "updated_at")
        started_at = parse_timestamp(raw.get("run_started_at"), "run_started_at")
        if started_at is None:
            started_at = parse_timestamp(raw.get("created_at"), "created_at")
        return SourceRun(
            external_run_id=run_identity(raw.get("id"), "id"),
            status=status,
            source_status=words,
            started_at=started_at,
            finished_at=updated_at if status in TERMINAL_STATUSES else None,
            source_updated_at=updated_at,
            attempt=attempt_number(raw.get("run_attempt"), "run_attempt"),
        )


PLATFORM = register(
    Platform(
        name="github_actions",
        source_model=GithubActionsSource,
        connector=GithubActionsConnector,
        statuses={"status": GITHUB_STATUS, "conclusion": GITHUB_CONCLUSION},
        # created=>=: a filter on the run's creation.
        incremental="started",
    )
)
