"""``POST /api/v1/runs:batch``: up to 1,000 runs of any pipelines recorded in
one request (issue 17; monitoring contract, "Batch recording").

**Items.** ``{"runs": [...]}`` holds 1 to 1,000 items, each a manual run's
fields (``chm.runs.schemas.RunCreate``) plus ``pipeline_id`` and
``external_run_id``, both required (``schemas.BatchRun``). A body that is not
such an object is the request's 422 (400 when it is not JSON, 413 past
``CHM_MAX_BODY_BYTES``). Each item is then parsed on its own: an invalid one
is that item's error, as the single-run ``POST /pipelines/{id}/runs`` would
answer it (422 with field errors, their paths relative to the item; 404 for
a pipeline that does not exist, 409 for an inactive one, 422 when
``finished_at`` is before ``started_at``), and the others are stored.

**Storing.** Failure text and payload are redacted and capped as the
single-run POST stores them. Every valid item is stored in the request's one
write transaction through the ingestion store (``chm.ingestion.store``):
its pipelines' locks taken in one statement in key order (two batches never
deadlock, and a batch serializes with ingestion of the same pipeline), the
stored runs of all the batch's keys read in one statement (``store``), each
item folded by the no-regression rule (``chm.ingestion.rule.merge``: a
terminal run never goes back to running...), and the runs that really change
written by the store's one upsert. An identical run is ``unchanged`` (a
replay writes nothing), never a 409.

**Order.** Items naming the same run (pipeline and external run id) are
recorded in request order, as if sent one after the other: each item's
result is what it did to the run as the items before it left it.

**Answer.** 200 with each item's ``index``, ``result`` (created, updated,
unchanged, error), ``run_id`` and ``error`` (a problem document), in request
order, and the counts. The batch's runs count in the ingestion counters
under the source name ``BATCH_SOURCE`` (errors as skipped), shown by
``chm_ingested_runs_total{source="api:batch"}``.

Modules: ``router`` (the route), ``schemas`` (request and answer),
``service`` (parse, check, fold, store), ``store`` (the batch's locks and
reads, one statement each, per database).
"""

# The ingestion counters' source name of the runs recorded by batches.
BATCH_SOURCE = "api:batch"
