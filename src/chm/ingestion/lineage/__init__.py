"""``POST /api/v1/lineage``: OpenLineage run events pushed by the platforms (issue 7 §3).

The endpoint takes RunEvents exactly as the official openlineage-python HTTP
transport sends them (its default endpoint ``api/v1/lineage``, JSON,
optionally ``Content-Encoding: gzip``, ``Authorization: Bearer <api key>``),
so an Airflow, Spark, dbt or Flink integration points ``OPENLINEAGE_URL`` at
CHM with no code.

**Who may write what (SE-001).** A source of the sources file with an
``openlineage_namespace`` maps that namespace to its platform, environment
and (optional) client. The bearer key must be that source's token (read
from its ``token_env``): a key for one namespace cannot write another's
runs. A missing or unknown key, or a key of another namespace, is a 401
that changes nothing (``auth``).

**Mapping.** ``job.name`` is matched against the ``external_id`` of the
active pipelines of the source's platform and environment that this source
serves (its client's, or every client's when it has none, as for pulls:
``service``). The external run id is the platform's own id of the run when
the event's facets name it (Airflow's ``dag_run_id``, dbt's invocation id,
Spark's application id: ``mapping.PLATFORM_RUN_IDS``), else ``run.runId``,
so that a run pulled and pushed is one row. START and RUNNING mean
running, COMPLETE success, FAIL failed, ABORT cancelled; OTHER (or no
eventType) changes nothing. ``started_at`` is the START event's time,
``finished_at`` the terminal event's; the ``errorMessage`` run facet's message
is the failure text; the event itself, redacted, is the run's source payload;
the event time is the source update time (``mapping``). A failed task's
error also goes on the parent run its ``parent`` facet names, when CHM
stores it and says nothing more specific (``mapping.parent_failure``,
``service.record_parent_failure``).

**Order.** Events may arrive out of order or twice. Each is stored through
the engine's store with the no-regression rule (``chm.ingestion.rule``): a
late START or RUNNING never regresses a terminal run (and a duplicate
changes nothing); ``fold_event`` adds only that a late START still tells
when the run started. The stored run thus ends as if the events had arrived
in order, once.

**Answers.** 201 when a run was created or changed, 200 when the event changed
nothing, 202 when the job maps to no pipeline (ignored, counted, logged and
recorded for ``GET /api/v1/lineage/unmatched``, or its pipeline created by a
``register_pipelines`` source: ``unmatched``), 401 for a missing or wrong key,
422 (problem+json) for a body that is not a valid RunEvent, 400 for a body
that is not JSON (or not gzip when it says so), 413 past
``CHM_MAX_BODY_BYTES`` (5 MiB by default) as sent or once inflated (``body``).

Modules: ``router`` (the route), ``auth`` (the bearer key against the
sources), ``body`` (size limits and gzip), ``mapping`` (a RunEvent, parsed, to
a run snapshot), ``service`` (the pipeline an event is for, and storing it),
``unmatched`` (jobs matching no pipeline: recorded, bounded, listed; pipelines
registered from events).
"""
