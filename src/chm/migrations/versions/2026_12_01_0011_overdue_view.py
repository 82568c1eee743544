"""The BI view chm_overdue_pipelines (issue 15): scheduled pipelines whose
expected run is missed or late, from the stored schedule ticks.

The generated block holds every view, as the latest migration carrying views
must (``tests/reports/test_views.py``); only ``chm_overdue_pipelines`` is new
(the others are unchanged since migration 0005), so only it is created here,
and dropped by the downgrade. The other views, and the grants on them, stay.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

NEW_VIEW = "chm_overdue_pipelines"


# --- BEGIN GENERATED VIEWS (python -m chm.reports.views block) ---
VIEW_NAMES = [
    "chm_failures_over_time_daily",
    "chm_latest_status",
    "chm_failures_by_client",
    "chm_flaky_pipelines",
    "chm_failure_rate_by_platform",
    "chm_run_durations",
    "chm_duration_summary",
    "chm_duration_histogram",
    "chm_status_changes",
    "chm_stuck_runs",
    "chm_overdue_pipelines",
]
VIEW_DDL = {
    "sqlite": [
        """\
CREATE VIEW chm_failures_over_time_daily AS
WITH RECURSIVE buckets(bucket_start) AS
(SELECT strftime('%Y-%m-%d 00:00:00.000000', strftime('%Y-%m-%d 00:00:00.000000', 'now',
    '-2592000 seconds')) AS bucket_start
    UNION ALL SELECT strftime('%Y-%m-%d %H:%M:%S.000000', buckets.bucket_start,
    '+86400 seconds') AS anon_1
FROM buckets
WHERE strftime('%Y-%m-%d %H:%M:%S.000000', buckets.bucket_start,
    '+86400 seconds') < (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'))
 SELECT buckets.bucket_start, coalesce(counts.failed_runs, 0) AS failed_runs,
    coalesce(counts.total_runs, 0) AS total_runs, (strftime('%Y-%m-%d %H:%M:%f',
    'now') || '000') AS as_of, strftime('%Y-%m-%d 00:00:00.000000', 'now',
    '-2592000 seconds') AS since, (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000') AS until
FROM buckets LEFT OUTER JOIN (SELECT strftime('%Y-%m-%d 00:00:00.000000',
    runs.event_at) AS bucket_start, coalesce(sum(CASE
    WHEN (runs.status = 'failed') THEN 1 ELSE 0 END), 0) AS failed_runs,
    count(*) AS total_runs
FROM runs JOIN pipelines ON pipelines.id = runs.pipeline_id JOIN clients
    ON clients.id = pipelines.client_id
WHERE pipelines.is_active IS 1 AND clients.is_active IS 1
    AND runs.event_at >= strftime('%Y-%m-%d 00:00:00.000000', 'now', '-2592000 seconds')
    AND runs.event_at < (strftime('%Y-%m-%d %H:%M:%f',
    'now') || '000') GROUP BY strftime('%Y-%m-%d 00:00:00.000000',
    runs.event_at)) AS counts ON counts.bucket_start = buckets.bucket_start
    ORDER BY buckets.bucket_start
""",
        """\
CREATE VIEW chm_latest_status AS
SELECT inventory.client_id, inventory.client_name, inventory.pipeline_id,
    inventory.pipeline_name, inventory.platform, inventory.environment,
    latest_run.id AS latest_run_id, latest_run.status AS latest_status,
    latest_run.started_at AS started_at, latest_run.finished_at AS finished_at,
    (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000') AS as_of
FROM (SELECT clients.id AS client_id, clients.name AS client_name,
    clients.name_key AS client_key, pipelines.id AS pipeline_id,
    pipelines.name AS pipeline_name, pipelines.name_key AS pipeline_key,
    pipelines.platform AS platform, pipelines.environment AS environment, (SELECT runs.id
FROM runs
WHERE runs.pipeline_id = pipelines.id AND runs.event_at < (strftime('%Y-%m-%d %H:%M:%f',
    'now') || '000') ORDER BY coalesce(runs.started_at, '') DESC,
    coalesce(runs.finished_at, '') DESC, runs.id DESC
 LIMIT 1 OFFSET 0) AS latest_run_id
FROM pipelines JOIN clients ON clients.id = pipelines.client_id
WHERE pipelines.is_active IS 1 AND clients.is_active IS 1) AS inventory
    LEFT OUTER JOIN runs AS latest_run ON latest_run.id = inventory.latest_run_id
    ORDER BY inventory.client_key, inventory.client_id, inventory.pipeline_key,
    inventory.pipeline_id
""",
        """\
CREATE VIEW chm_failures_by_client AS
SELECT clients.id AS client_id, clients.name AS client_name, coalesce(counts.failed_24h,
    0) AS failed_24h, coalesce(counts.failed_7d, 0) AS failed_7d,
    coalesce(counts.total_24h, 0) AS total_24h, coalesce(counts.total_7d, 0) AS total_7d,
    (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000') AS as_of
FROM clients LEFT OUTER JOIN (SELECT pipelines.client_id AS client_id, coalesce(sum(CASE
    WHEN (runs.status = 'failed' AND runs.event_at >= (strftime('%Y-%m-%d %H:%M:%f', 'now',
    '-86400 seconds') || '000')) THEN 1 ELSE 0 END), 0) AS failed_24h, coalesce(sum(CASE
    WHEN (runs.status = 'failed') THEN 1 ELSE 0 END), 0) AS failed_7d, coalesce(sum(CASE
    WHEN (runs.event_at >= (strftime('%Y-%m-%d %H:%M:%f', 'now',
    '-86400 seconds') || '000')) THEN 1 ELSE 0 END), 0) AS total_24h, count(*) AS total_7d
FROM runs JOIN pipelines ON pipelines.id = runs.pipeline_id JOIN clients
    ON clients.id = pipelines.client_id
WHERE pipelines.is_active IS 1 AND clients.is_active IS 1
    AND runs.event_at >= (strftime('%Y-%m-%d %H:%M:%f', 'now', '-604800 seconds') || '000')
    AND runs.event_at < (strftime('%Y-%m-%d %H:%M:%f',
    'now') || '000') GROUP BY pipelines.client_id) AS counts
    ON counts.client_id = clients.id
WHERE clients.is_active IS 1 ORDER BY coalesce(counts.failed_24h, 0) DESC,
    coalesce(counts.failed_7d, 0) DESC, clients.name_key, clients.id
""",
        """\
CREATE VIEW chm_flaky_pipelines AS
SELECT pipelines.id AS pipeline_id, pipelines.name AS pipeline_name,
    clients.id AS client_id, clients.name AS client_name, pipelines.platform AS platform,
    counts.total_runs, counts.failed_runs, counts.success_runs,
    CAST(counts.failed_runs AS FLOAT) / CAST(counts.total_runs AS FLOAT) AS failure_rate,
    counts.status_changes, (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000') AS as_of,
    (strftime('%Y-%m-%d %H:%M:%f', 'now', '-2592000 seconds') || '000') AS since,
    (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000') AS until
FROM (SELECT window_runs.pipeline_id AS pipeline_id, count(*) AS total_runs,
    coalesce(sum(CASE WHEN (window_runs.status = 'failed') THEN 1 ELSE 0 END),
    0) AS failed_runs, coalesce(sum(CASE
    WHEN (window_runs.status = 'success') THEN 1 ELSE 0 END), 0) AS success_runs,
    coalesce(sum(CASE
    WHEN (window_runs.status != window_runs.previous_outcome) THEN 1 ELSE 0 END),
    0) AS status_changes
FROM (SELECT runs.pipeline_id AS pipeline_id, runs.status AS status, CASE
    WHEN (runs.status IN ('success',
    'failed')) THEN lag(runs.status) OVER (PARTITION BY runs.pipeline_id,
    runs.status IN ('success', 'failed') ORDER BY runs.event_at,
    runs.id) END AS previous_outcome
FROM runs JOIN pipelines ON pipelines.id = runs.pipeline_id JOIN clients
    ON clients.id = pipelines.client_id
WHERE pipelines.is_active IS 1 AND clients.is_active IS 1
    AND runs.event_at >= (strftime('%Y-%m-%d %H:%M:%f', 'now',
    '-2592000 seconds') || '000') AND runs.event_at < (strftime('%Y-%m-%d %H:%M:%f',
    'now') || '000')) AS window_runs GROUP BY window_runs.pipeline_id
HAVING coalesce(sum(CASE WHEN (window_runs.status = 'failed') THEN 1 ELSE 0 END), 0) > 0
    AND coalesce(sum(CASE WHEN (window_runs.status = 'success') THEN 1 ELSE 0 END),
    0) > 0) AS counts JOIN pipelines ON pipelines.id = counts.pipeline_id JOIN clients
    ON clients.id = pipelines.client_id ORDER BY counts.failed_runs DESC,
    (CAST(counts.failed_runs AS FLOAT) / CAST(counts.total_runs AS FLOAT)) DESC,
    pipelines.id
""",
        """\
CREATE VIEW chm_failure_rate_by_platform AS
SELECT pipelines.platform AS platform, count(*) AS total_runs, coalesce(sum(CASE
    WHEN (runs.status = 'failed') THEN 1 ELSE 0 END), 0) AS failed_runs,
    CAST(coalesce(sum(CASE WHEN (runs.status = 'failed') THEN 1 ELSE 0 END),
    0) AS FLOAT) / CAST(count(*) AS FLOAT) AS failure_rate, (strftime('%Y-%m-%d %H:%M:%f',
    'now') || '000') AS as_of, (strftime('%Y-%m-%d %H:%M:%f', 'now',
    '-604800 seconds') || '000') AS since, (strftime('%Y-%m-%d %H:%M:%f',
    'now') || '000') AS until
FROM runs JOIN pipelines ON pipelines.id = runs.pipeline_id JOIN clients
    ON clients.id = pipelines.client_id
WHERE pipelines.is_active IS 1 AND clients.is_active IS 1
    AND runs.event_at >= (strftime('%Y-%m-%d %H:%M:%f', 'now', '-604800 seconds') || '000')
    AND runs.event_at < (strftime('%Y-%m-%d %H:%M:%f',
    'now') || '000') GROUP BY pipelines.platform ORDER BY pipelines.platform
""",
        """\
CREATE VIEW chm_run_durations AS
SELECT runs.id AS run_id, pipelines.id AS pipeline_id, pipelines.name AS pipeline_name,
    clients.id AS client_id, clients.name AS client_name, pipelines.platform AS platform,
    runs.status AS status, runs.event_at AS event_at,
    runs.duration_seconds AS duration_seconds, (strftime('%Y-%m-%d %H:%M:%f',
    'now') || '000') AS as_of, (strftime('%Y-%m-%d %H:%M:%f', 'now',
    '-604800 seconds') || '000') AS since, (strftime('%Y-%m-%d %H:%M:%f',
    'now') || '000') AS until
FROM runs JOIN pipelines ON pipelines.id = runs.pipeline_id JOIN clients
    ON clients.id = pipelines.client_id
WHERE pipelines.is_active IS 1 AND clients.is_active IS 1
    AND runs.event_at >= (strftime('%Y-%m-%d %H:%M:%f', 'now', '-604800 seconds') || '000')
    AND runs.event_at < (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')
    AND runs.duration_seconds IS NOT NULL
""",
        """\
CREATE VIEW chm_duration_summary AS
SELECT count(ranked.duration) AS count, max(CASE
    WHEN (ranked.rank = ((50 * ranked.n + 99) / 100)) THEN ranked.duration END) AS p50,
    max(CASE
    WHEN (ranked.rank = ((90 * ranked.n + 99) / 100)) THEN ranked.duration END) AS p90,
    max(CASE
    WHEN (ranked.rank = ((95 * ranked.n + 99) / 100)) THEN ranked.duration END) AS p95,
    max(CASE
    WHEN (ranked.rank = ((99 * ranked.n + 99) / 100)) THEN ranked.duration END) AS p99,
    max(ranked.duration) AS max, (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000') AS as_of,
    (strftime('%Y-%m-%d %H:%M:%f', 'now', '-604800 seconds') || '000') AS since,
    (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000') AS until
FROM (SELECT durations.duration_seconds AS duration,
    row_number() OVER (ORDER BY durations.duration_seconds) AS rank, count(*) OVER () AS n
FROM (SELECT runs.id AS run_id, pipelines.id AS pipeline_id,
    pipelines.name AS pipeline_name, clients.id AS client_id, clients.name AS client_name,
    pipelines.platform AS platform, runs.status AS status, runs.event_at AS event_at,
    runs.duration_seconds AS duration_seconds
FROM runs JOIN pipelines ON pipelines.id = runs.pipeline_id JOIN clients
    ON clients.id = pipelines.client_id
WHERE pipelines.is_active IS 1 AND clients.is_active IS 1
    AND runs.event_at >= (strftime('%Y-%m-%d %H:%M:%f', 'now', '-604800 seconds') || '000')
    AND runs.event_at < (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')
    AND runs.duration_seconds IS NOT NULL) AS durations) AS ranked
""",
        """\
CREATE VIEW chm_duration_histogram AS
SELECT bins.gt_seconds, bins.le_seconds, coalesce(counts.count, 0) AS count,
    (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000') AS as_of,
    (strftime('%Y-%m-%d %H:%M:%f', 'now', '-604800 seconds') || '000') AS since,
    (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000') AS until
FROM (SELECT 0 AS bin, CAST(NULL AS INTEGER) AS gt_seconds, 1 AS le_seconds
    UNION ALL SELECT 1 AS bin, 1 AS gt_seconds, 5 AS le_seconds UNION ALL SELECT 2 AS bin,
    5 AS gt_seconds, 10 AS le_seconds UNION ALL SELECT 3 AS bin, 10 AS gt_seconds,
    30 AS le_seconds UNION ALL SELECT 4 AS bin, 30 AS gt_seconds, 60 AS le_seconds
    UNION ALL SELECT 5 AS bin, 60 AS gt_seconds, 120 AS le_seconds
    UNION ALL SELECT 6 AS bin, 120 AS gt_seconds, 300 AS le_seconds
    UNION ALL SELECT 7 AS bin, 300 AS gt_seconds, 600 AS le_seconds
    UNION ALL SELECT 8 AS bin, 600 AS gt_seconds, 900 AS le_seconds
    UNION ALL SELECT 9 AS bin, 900 AS gt_seconds, 1800 AS le_seconds
    UNION ALL SELECT 10 AS bin, 1800 AS gt_seconds, 3600 AS le_seconds
    UNION ALL SELECT 11 AS bin, 3600 AS gt_seconds, 7200 AS le_seconds
    UNION ALL SELECT 12 AS bin, 7200 AS gt_seconds, 14400 AS le_seconds
    UNION ALL SELECT 13 AS bin, 14400 AS gt_seconds, 28800 AS le_seconds
    UNION ALL SELECT 14 AS bin, 28800 AS gt_seconds, 86400 AS le_seconds
    UNION ALL SELECT 15 AS bin, 86400 AS gt_seconds,
    CAST(NULL AS INTEGER) AS le_seconds) AS bins LEFT OUTER JOIN (SELECT CASE
    WHEN (durations.duration_seconds <= 1) THEN 0
    WHEN (durations.duration_seconds <= 5) THEN 1
    WHEN (durations.duration_seconds <= 10) THEN 2
    WHEN (durations.duration_seconds <= 30) THEN 3
    WHEN (durations.duration_seconds <= 60) THEN 4
    WHEN (durations.duration_seconds <= 120) THEN 5
    WHEN (durations.duration_seconds <= 300) THEN 6
    WHEN (durations.duration_seconds <= 600) THEN 7
    WHEN (durations.duration_seconds <= 900) THEN 8
    WHEN (durations.duration_seconds <= 1800) THEN 9
    WHEN (durations.duration_seconds <= 3600) THEN 10
    WHEN (durations.duration_seconds <= 7200) THEN 11
    WHEN (durations.duration_seconds <= 14400) THEN 12
    WHEN (durations.duration_seconds <= 28800) THEN 13
    WHEN (durations.duration_seconds <= 86400) THEN 14 ELSE 15 END AS bin, count(*) AS count
FROM (SELECT runs.id AS run_id, pipelines.id AS pipeline_id,
    pipelines.name AS pipeline_name, clients.id AS client_id, clients.name AS client_name,
    pipelines.platform AS platform, runs.status AS status, runs.event_at AS event_at,
    runs.duration_seconds AS duration_seconds
FROM runs JOIN pipelines ON pipelines.id = runs.pipeline_id JOIN clients
    ON clients.id = pipelines.client_id
WHERE pipelines.is_active IS 1 AND clients.is_active IS 1
    AND runs.event_at >= (strftime('%Y-%m-%d %H:%M:%f', 'now', '-604800 seconds') || '000')
    AND runs.event_at < (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')
    AND runs.duration_seconds IS NOT NULL) AS durations GROUP BY bin) AS counts
    ON counts.bin = bins.bin ORDER BY bins.bin
""",
        """\
CREATE VIEW chm_status_changes AS
SELECT inventory.pipeline_id, inventory.pipeline_name, inventory.client_id,
    inventory.client_name, previous_run.status AS previous_status,
    current_run.status AS current_status, current_run.event_at AS changed_at,
    (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000') AS as_of,
    (strftime('%Y-%m-%d %H:%M:%f', 'now', '-86400 seconds') || '000') AS since,
    (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000') AS until
FROM (SELECT clients.id AS client_id, clients.name AS client_name,
    clients.name_key AS client_key, pipelines.id AS pipeline_id,
    pipelines.name AS pipeline_name, pipelines.name_key AS pipeline_key,
    pipelines.platform AS platform, pipelines.environment AS environment, (SELECT runs.id
FROM runs
WHERE runs.pipeline_id = pipelines.id AND runs.event_at < (strftime('%Y-%m-%d %H:%M:%f',
    'now', '-86400 seconds') || '000') ORDER BY coalesce(runs.started_at, '') DESC,
    coalesce(runs.finished_at, '') DESC, runs.id DESC
 LIMIT 1 OFFSET 0) AS previous_run_id, (SELECT runs.id
FROM runs
WHERE runs.pipeline_id = pipelines.id AND runs.event_at < (strftime('%Y-%m-%d %H:%M:%f',
    'now') || '000') ORDER BY coalesce(runs.started_at, '') DESC,
    coalesce(runs.finished_at, '') DESC, runs.id DESC
 LIMIT 1 OFFSET 0) AS current_run_id
FROM pipelines JOIN clients ON clients.id = pipelines.client_id
WHERE pipelines.is_active IS 1 AND clients.is_active IS 1) AS inventory
    JOIN runs AS current_run ON current_run.id = inventory.current_run_id
    LEFT OUTER JOIN runs AS previous_run ON previous_run.id = inventory.previous_run_id
WHERE previous_run.status IS NOT current_run.status ORDER BY inventory.client_key,
    inventory.client_id, inventory.pipeline_key, inventory.pipeline_id
""",
        """\
CREATE VIEW chm_stuck_runs AS
SELECT runs.id AS run_id, pipelines.id AS pipeline_id, pipelines.name AS pipeline_name,
    clients.id AS client_id, clients.name AS client_name, runs.status AS status,
    runs.started_at AS started_at, runs.event_at AS event_at,
    (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000') AS as_of,
    (strftime('%Y-%m-%d %H:%M:%f', 'now', '-21600 seconds') || '000') AS until
FROM runs JOIN pipelines ON pipelines.id = runs.pipeline_id JOIN clients
    ON clients.id = pipelines.client_id
WHERE pipelines.is_active IS 1 AND clients.is_active IS 1 AND runs.status IN ('queued',
    'running') AND runs.event_at < (strftime('%Y-%m-%d %H:%M:%f', 'now',
    '-21600 seconds') || '000') ORDER BY runs.event_at, runs.id
""",
        """\
CREATE VIEW chm_overdue_pipelines AS
WITH due_ticks AS MATERIALIZED
(SELECT pipelines.id AS pipeline_id, (SELECT schedule_ticks.tick_at
FROM schedule_ticks
WHERE schedule_ticks.pipeline_id = pipelines.id
    AND schedule_ticks.due_missed <= (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')
    ORDER BY schedule_ticks.due_missed DESC
 LIMIT 1 OFFSET 0) AS expected_at, (SELECT schedule_ticks.window_start
FROM schedule_ticks
WHERE schedule_ticks.pipeline_id = pipelines.id
    AND schedule_ticks.due_missed <= (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')
    ORDER BY schedule_ticks.due_missed DESC
 LIMIT 1 OFFSET 0) AS window_start, (SELECT schedule_ticks.due_missed
FROM schedule_ticks
WHERE schedule_ticks.pipeline_id = pipelines.id
    AND schedule_ticks.due_missed <= (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')
    ORDER BY schedule_ticks.due_missed DESC
 LIMIT 1 OFFSET 0) AS due_missed, (SELECT schedule_ticks.due_late
FROM schedule_ticks
WHERE schedule_ticks.pipeline_id = pipelines.id
    AND schedule_ticks.due_missed <= (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')
    ORDER BY schedule_ticks.due_missed DESC
 LIMIT 1 OFFSET 0) AS due_late
FROM pipelines
WHERE pipelines.schedule IS NOT NULL
    AND pipelines.schedule_ticks_until >= (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'))
 SELECT overdue.pipeline_id, overdue.pipeline_name, overdue.client_id, overdue.client_name,
    overdue.platform, overdue.schedule, overdue.schedule_timezone, overdue.state,
    overdue.expected_at, overdue.due_by, last_run.event_at AS last_run_at,
    last_run.status AS last_status, (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000') AS as_of
FROM (SELECT facts.pipeline_id AS pipeline_id, facts.pipeline_name AS pipeline_name,
    facts.client_id AS client_id, facts.client_name AS client_name,
    facts.platform AS platform, facts.schedule AS schedule,
    facts.schedule_timezone AS schedule_timezone, facts.state AS state,
    facts.expected_at AS expected_at, CASE
    WHEN (facts.state = 'missed') THEN facts.due_missed ELSE facts.due_late END AS due_by,
    (SELECT runs.id
FROM runs
WHERE runs.pipeline_id = facts.pipeline_id
    AND runs.event_at <= (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')
    ORDER BY coalesce(runs.started_at, '') DESC, coalesce(runs.finished_at, '') DESC,
    runs.id DESC
 LIMIT 1 OFFSET 0) AS last_run_id
FROM (SELECT pipelines.id AS pipeline_id, pipelines.name AS pipeline_name,
    clients.id AS client_id, clients.name AS client_name, pipelines.platform AS platform,
    pipelines.schedule AS schedule, pipelines.schedule_timezone AS schedule_timezone,
    expectations.expected_at AS expected_at, expectations.due_missed AS due_missed,
    expectations.due_late AS due_late, CASE WHEN (NOT (EXISTS (SELECT *
FROM runs
WHERE runs.pipeline_id = expectations.pipeline_id
    AND runs.event_at >= expectations.window_start
    AND runs.event_at <= (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')))) THEN 'missed'
    WHEN (expectations.due_late <= (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')
    AND (EXISTS (SELECT *
FROM runs
WHERE runs.pipeline_id = expectations.pipeline_id
    AND runs.event_at >= expectations.window_start
    AND runs.event_at <= (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')
    AND runs.event_at <= expectations.due_late AND runs.status IN ('queued',
    'running')))) THEN 'late' ELSE NULL END AS state
FROM (SELECT due_ticks.pipeline_id AS pipeline_id, due_ticks.expected_at AS expected_at,
    due_ticks.window_start AS window_start, due_ticks.due_missed AS due_missed,
    due_ticks.due_late AS due_late
FROM due_ticks
WHERE due_ticks.expected_at IS NOT NULL) AS expectations JOIN pipelines
    ON pipelines.id = expectations.pipeline_id JOIN clients
    ON clients.id = pipelines.client_id
WHERE pipelines.schedule IS NOT NULL
    AND expectations.due_missed <= (strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')
    AND pipelines.is_active IS 1 AND clients.is_active IS 1) AS facts
WHERE facts.state IS NOT NULL) AS overdue LEFT OUTER JOIN runs AS last_run
    ON last_run.id = overdue.last_run_id ORDER BY overdue.due_by, overdue.pipeline_id
""",
    ],
    "postgresql": [
        """\
CREATE VIEW chm_failures_over_time_daily AS
WITH RECURSIVE buckets(bucket_start) AS
(SELECT date_trunc('day', date_trunc('day', (now() - INTERVAL '2592000 seconds'), 'UTC'),
    'UTC') AS bucket_start
    UNION ALL SELECT (buckets.bucket_start + INTERVAL '86400 seconds') AS anon_1
FROM buckets
WHERE (buckets.bucket_start + INTERVAL '86400 seconds') < now())
 SELECT buckets.bucket_start, coalesce(counts.failed_runs, 0) AS failed_runs,
    coalesce(counts.total_runs, 0) AS total_runs, now() AS as_of, date_trunc('day',
    (now() - INTERVAL '2592000 seconds'), 'UTC') AS since, now() AS until
FROM buckets LEFT OUTER JOIN (SELECT date_trunc('day', runs.event_at,
    'UTC') AS bucket_start, coalesce(sum(CASE
    WHEN (runs.status = 'failed') THEN 1 ELSE 0 END), 0) AS failed_runs,
    count(*) AS total_runs
FROM runs JOIN pipelines ON pipelines.id = runs.pipeline_id JOIN clients
    ON clients.id = pipelines.client_id
WHERE pipelines.is_active IS true AND clients.is_active IS true
    AND runs.event_at >= date_trunc('day', (now() - INTERVAL '2592000 seconds'), 'UTC')
    AND runs.event_at < now() GROUP BY date_trunc('day', runs.event_at, 'UTC')) AS counts
    ON counts.bucket_start = buckets.bucket_start ORDER BY buckets.bucket_start
""",
        """\
COMMENT ON VIEW chm_failures_over_time_daily IS
'Failed and total runs per UTC day: today so far and the 30 days before'
""",
        """\
COMMENT ON COLUMN chm_failures_over_time_daily.bucket_start IS
'Start of the UTC-aligned hour or day'
""",
        """\
COMMENT ON COLUMN chm_failures_over_time_daily.failed_runs IS
'Runs with status failed whose event time is in it'
""",
        """\
COMMENT ON COLUMN chm_failures_over_time_daily.total_runs IS
'All runs whose event time is in it'
""",
        """\
COMMENT ON COLUMN chm_failures_over_time_daily.as_of IS
'Reference time: the database''s current time when the view is queried'
""",
        """\
COMMENT ON COLUMN chm_failures_over_time_daily.since IS
'Start of the event-time window (inclusive)'
""",
        """\
COMMENT ON COLUMN chm_failures_over_time_daily.until IS
'End of the event-time window (exclusive)'
""",
        """\
CREATE VIEW chm_latest_status AS
SELECT inventory.client_id, inventory.client_name, inventory.pipeline_id,
    inventory.pipeline_name, inventory.platform, inventory.environment,
    latest_run.id AS latest_run_id, latest_run.status AS latest_status,
    latest_run.started_at AS started_at, latest_run.finished_at AS finished_at,
    now() AS as_of
FROM (SELECT clients.id AS client_id, clients.name AS client_name,
    clients.name_key AS client_key, pipelines.id AS pipeline_id,
    pipelines.name AS pipeline_name, pipelines.name_key AS pipeline_key,
    pipelines.platform AS platform, pipelines.environment AS environment, (SELECT runs.id
FROM runs
WHERE runs.pipeline_id = pipelines.id AND runs.event_at < now()
    ORDER BY coalesce(runs.started_at, '-infinity'::timestamptz) DESC,
    coalesce(runs.finished_at, '-infinity'::timestamptz) DESC, runs.id DESC
 LIMIT 1) AS latest_run_id
FROM pipelines JOIN clients ON clients.id = pipelines.client_id
WHERE pipelines.is_active IS true AND clients.is_active IS true) AS inventory
    LEFT OUTER JOIN runs AS latest_run ON latest_run.id = inventory.latest_run_id
    ORDER BY inventory.client_key, inventory.client_id, inventory.pipeline_key,
    inventory.pipeline_id
""",
        """\
COMMENT ON VIEW chm_latest_status IS
'Each active pipeline''s latest run by the ordering rule, pipelines without runs included'
""",
        """\
COMMENT ON COLUMN chm_latest_status.client_id IS
'Opaque server-generated id'
""",
        """\
COMMENT ON COLUMN chm_latest_status.client_name IS
'client name'
""",
        """\
COMMENT ON COLUMN chm_latest_status.pipeline_id IS
'Opaque server-generated id'
""",
        """\
COMMENT ON COLUMN chm_latest_status.pipeline_name IS
'pipeline name'
""",
        """\
COMMENT ON COLUMN chm_latest_status.platform IS
'platform'
""",
        """\
COMMENT ON COLUMN chm_latest_status.environment IS
'environment'
""",
        """\
COMMENT ON COLUMN chm_latest_status.latest_run_id IS
'The latest run before as_of by the ordering rule; null when none'
""",
        """\
COMMENT ON COLUMN chm_latest_status.latest_status IS
'That run''s stored status'
""",
        """\
COMMENT ON COLUMN chm_latest_status.started_at IS
'That run''s started_at'
""",
        """\
COMMENT ON COLUMN chm_latest_status.finished_at IS
'That run''s finished_at'
""",
        """\
COMMENT ON COLUMN chm_latest_status.as_of IS
'Reference time: the database''s current time when the view is queried'
""",
        """\
CREATE VIEW chm_failures_by_client AS
SELECT clients.id AS client_id, clients.name AS client_name, coalesce(counts.failed_24h,
    0) AS failed_24h, coalesce(counts.failed_7d, 0) AS failed_7d,
    coalesce(counts.total_24h, 0) AS total_24h, coalesce(counts.total_7d, 0) AS total_7d,
    now() AS as_of
FROM clients LEFT OUTER JOIN (SELECT pipelines.client_id AS client_id, coalesce(sum(CASE
    WHEN (runs.status = 'failed'
    AND runs.event_at >= (now() - INTERVAL '86400 seconds')) THEN 1 ELSE 0 END),
    0) AS failed_24h, coalesce(sum(CASE WHEN (runs.status = 'failed') THEN 1 ELSE 0 END),
    0) AS failed_7d, coalesce(sum(CASE
    WHEN (runs.event_at >= (now() - INTERVAL '86400 seconds')) THEN 1 ELSE 0 END),
    0) AS total_24h, count(*) AS total_7d
FROM runs JOIN pipelines ON pipelines.id = runs.pipeline_id JOIN clients
    ON clients.id = pipelines.client_id
WHERE pipelines.is_active IS true AND clients.is_active IS true
    AND runs.event_at >= (now() - INTERVAL '604800 seconds')
    AND runs.event_at < now() GROUP BY pipelines.client_id) AS counts
    ON counts.client_id = clients.id
WHERE clients.is_active IS true ORDER BY coalesce(counts.failed_24h, 0) DESC,
    coalesce(counts.failed_7d, 0) DESC, clients.name_key, clients.id
""",
        """\
COMMENT ON VIEW chm_failures_by_client IS
'Failed and total runs per active client over the last 24 hours and 7 days'
""",
        """\
COMMENT ON COLUMN chm_failures_by_client.client_id IS
'Opaque server-generated id'
""",
        """\
COMMENT ON COLUMN chm_failures_by_client.client_name IS
'client name'
""",
        """\
COMMENT ON COLUMN chm_failures_by_client.failed_24h IS
'Failed runs in the 24 hours before as_of'
""",
        """\
COMMENT ON COLUMN chm_failures_by_client.failed_7d IS
'Failed runs in the 7 days before as_of'
""",
        """\
COMMENT ON COLUMN chm_failures_by_client.total_24h IS
'All runs in the 24 hours before as_of'
""",
        """\
COMMENT ON COLUMN chm_failures_by_client.total_7d IS
'All runs in the 7 days before as_of'
""",
        """\
COMMENT ON COLUMN chm_failures_by_client.as_of IS
'Reference time: the database''s current time when the view is queried'
""",
        """\
CREATE VIEW chm_flaky_pipelines AS
SELECT pipelines.id AS pipeline_id, pipelines.name AS pipeline_name,
    clients.id AS client_id, clients.name AS client_name, pipelines.platform AS platform,
    counts.total_runs, counts.failed_runs, counts.success_runs,
    CAST(counts.failed_runs AS FLOAT) / CAST(counts.total_runs AS FLOAT) AS failure_rate,
    counts.status_changes, now() AS as_of, (now() - INTERVAL '2592000 seconds') AS since,
    now() AS until
FROM (SELECT window_runs.pipeline_id AS pipeline_id, count(*) AS total_runs,
    coalesce(sum(CASE WHEN (window_runs.status = 'failed') THEN 1 ELSE 0 END),
    0) AS failed_runs, coalesce(sum(CASE
    WHEN (window_runs.status = 'success') THEN 1 ELSE 0 END), 0) AS success_runs,
    coalesce(sum(CASE
    WHEN (window_runs.status != window_runs.previous_outcome) THEN 1 ELSE 0 END),
    0) AS status_changes
FROM (SELECT runs.pipeline_id AS pipeline_id, runs.status AS status, CASE
    WHEN (runs.status IN ('success',
    'failed')) THEN lag(runs.status) OVER (PARTITION BY runs.pipeline_id,
    runs.status IN ('success', 'failed') ORDER BY runs.event_at,
    runs.id) END AS previous_outcome
FROM runs JOIN pipelines ON pipelines.id = runs.pipeline_id JOIN clients
    ON clients.id = pipelines.client_id
WHERE pipelines.is_active IS true AND clients.is_active IS true
    AND runs.event_at >= (now() - INTERVAL '2592000 seconds')
    AND runs.event_at < now()) AS window_runs GROUP BY window_runs.pipeline_id
HAVING coalesce(sum(CASE WHEN (window_runs.status = 'failed') THEN 1 ELSE 0 END), 0) > 0
    AND coalesce(sum(CASE WHEN (window_runs.status = 'success') THEN 1 ELSE 0 END),
    0) > 0) AS counts JOIN pipelines ON pipelines.id = counts.pipeline_id JOIN clients
    ON clients.id = pipelines.client_id ORDER BY counts.failed_runs DESC,
    (CAST(counts.failed_runs AS FLOAT) / CAST(counts.total_runs AS FLOAT)) DESC,
    pipelines.id
""",
        """\
COMMENT ON VIEW chm_flaky_pipelines IS
'Pipelines that both failed and succeeded in the last 30 days, most failures first'
""",
        """\
COMMENT ON COLUMN chm_flaky_pipelines.pipeline_id IS
'Opaque server-generated id'
""",
        """\
COMMENT ON COLUMN chm_flaky_pipelines.pipeline_name IS
'pipeline name'
""",
        """\
COMMENT ON COLUMN chm_flaky_pipelines.client_id IS
'Opaque server-generated id'
""",
        """\
COMMENT ON COLUMN chm_flaky_pipelines.client_name IS
'client name'
""",
        """\
COMMENT ON COLUMN chm_flaky_pipelines.platform IS
'platform'
""",
        """\
COMMENT ON COLUMN chm_flaky_pipelines.total_runs IS
'All runs in the window'
""",
        """\
COMMENT ON COLUMN chm_flaky_pipelines.failed_runs IS
'Failed runs in the window'
""",
        """\
COMMENT ON COLUMN chm_flaky_pipelines.success_runs IS
'Successful runs in the window'
""",
        """\
COMMENT ON COLUMN chm_flaky_pipelines.failure_rate IS
'failed_runs / total_runs'
""",
        """\
COMMENT ON COLUMN chm_flaky_pipelines.status_changes IS
'Adjacent success/failed runs (oldest first by event time, then id) whose statuses differ'
""",
        """\
COMMENT ON COLUMN chm_flaky_pipelines.as_of IS
'Reference time: the database''s current time when the view is queried'
""",
        """\
COMMENT ON COLUMN chm_flaky_pipelines.since IS
'Start of the event-time window (inclusive)'
""",
        """\
COMMENT ON COLUMN chm_flaky_pipelines.until IS
'End of the event-time window (exclusive)'
""",
        """\
CREATE VIEW chm_failure_rate_by_platform AS
SELECT pipelines.platform AS platform, count(*) AS total_runs, coalesce(sum(CASE
    WHEN (runs.status = 'failed') THEN 1 ELSE 0 END), 0) AS failed_runs,
    CAST(coalesce(sum(CASE WHEN (runs.status = 'failed') THEN 1 ELSE 0 END),
    0) AS FLOAT) / CAST(count(*) AS FLOAT) AS failure_rate, now() AS as_of,
    (now() - INTERVAL '604800 seconds') AS since, now() AS until
FROM runs JOIN pipelines ON pipelines.id = runs.pipeline_id JOIN clients
    ON clients.id = pipelines.client_id
WHERE pipelines.is_active IS true AND clients.is_active IS true
    AND runs.event_at >= (now() - INTERVAL '604800 seconds')
    AND runs.event_at < now() GROUP BY pipelines.platform ORDER BY pipelines.platform
""",
        """\
COMMENT ON VIEW chm_failure_rate_by_platform IS
'Failed / total runs per platform over the last 7 days'
""",
        """\
COMMENT ON COLUMN chm_failure_rate_by_platform.platform IS
'platform'
""",
        """\
COMMENT ON COLUMN chm_failure_rate_by_platform.total_runs IS
'All runs in the window'
""",
        """\
COMMENT ON COLUMN chm_failure_rate_by_platform.failed_runs IS
'Failed runs in the window'
""",
        """\
COMMENT ON COLUMN chm_failure_rate_by_platform.failure_rate IS
'failed_runs / total_runs'
""",
        """\
COMMENT ON COLUMN chm_failure_rate_by_platform.as_of IS
'Reference time: the database''s current time when the view is queried'
""",
        """\
COMMENT ON COLUMN chm_failure_rate_by_platform.since IS
'Start of the event-time window (inclusive)'
""",
        """\
COMMENT ON COLUMN chm_failure_rate_by_platform.until IS
'End of the event-time window (exclusive)'
""",
        """\
CREATE VIEW chm_run_durations AS
SELECT runs.id AS run_id, pipelines.id AS pipeline_id, pipelines.name AS pipeline_name,
    clients.id AS client_id, clients.name AS client_name, pipelines.platform AS platform,
    runs.status AS status, runs.event_at AS event_at,
    runs.duration_seconds AS duration_seconds, now() AS as_of,
    (now() - INTERVAL '604800 seconds') AS since, now() AS until
FROM runs JOIN pipelines ON pipelines.id = runs.pipeline_id JOIN clients
    ON clients.id = pipelines.client_id
WHERE pipelines.is_active IS true AND clients.is_active IS true
    AND runs.event_at >= (now() - INTERVAL '604800 seconds') AND runs.event_at < now()
    AND runs.duration_seconds IS NOT NULL
""",
        """\
COMMENT ON VIEW chm_run_durations IS
'Every run with a duration in the last 7 days: the set the duration views aggregate'
""",
        """\
COMMENT ON COLUMN chm_run_durations.run_id IS
'Opaque server-generated id'
""",
        """\
COMMENT ON COLUMN chm_run_durations.pipeline_id IS
'Opaque server-generated id'
""",
        """\
COMMENT ON COLUMN chm_run_durations.pipeline_name IS
'pipeline name'
""",
        """\
COMMENT ON COLUMN chm_run_durations.client_id IS
'Opaque server-generated id'
""",
        """\
COMMENT ON COLUMN chm_run_durations.client_name IS
'client name'
""",
        """\
COMMENT ON COLUMN chm_run_durations.platform IS
'platform'
""",
        """\
COMMENT ON COLUMN chm_run_durations.status IS
'status'
""",
        """\
COMMENT ON COLUMN chm_run_durations.event_at IS
'started_at, else finished_at, else created_at'
""",
        """\
COMMENT ON COLUMN chm_run_durations.duration_seconds IS
'duration seconds'
""",
        """\
COMMENT ON COLUMN chm_run_durations.as_of IS
'Reference time: the database''s current time when the view is queried'
""",
        """\
COMMENT ON COLUMN chm_run_durations.since IS
'Start of the event-time window (inclusive)'
""",
        """\
COMMENT ON COLUMN chm_run_durations.until IS
'End of the event-time window (exclusive)'
""",
        """\
CREATE VIEW chm_duration_summary AS
SELECT count(ranked.duration) AS count, max(CASE
    WHEN (ranked.rank = ((50 * ranked.n + 99) / 100)) THEN ranked.duration END) AS p50,
    max(CASE
    WHEN (ranked.rank = ((90 * ranked.n + 99) / 100)) THEN ranked.duration END) AS p90,
    max(CASE
    WHEN (ranked.rank = ((95 * ranked.n + 99) / 100)) THEN ranked.duration END) AS p95,
    max(CASE
    WHEN (ranked.rank = ((99 * ranked.n + 99) / 100)) THEN ranked.duration END) AS p99,
    max(ranked.duration) AS max, now() AS as_of,
    (now() - INTERVAL '604800 seconds') AS since, now() AS until
FROM (SELECT durations.duration_seconds AS duration,
    row_number() OVER (ORDER BY durations.duration_seconds) AS rank, count(*) OVER () AS n
FROM (SELECT runs.id AS run_id, pipelines.id AS pipeline_id,
    pipelines.name AS pipeline_name, clients.id AS client_id, clients.name AS client_name,
    pipelines.platform AS platform, runs.status AS status, runs.event_at AS event_at,
    runs.duration_seconds AS duration_seconds
FROM runs JOIN pipelines ON pipelines.id = runs.pipeline_id JOIN clients
    ON clients.id = pipelines.client_id
WHERE pipelines.is_active IS true AND clients.is_active IS true
    AND runs.event_at >= (now() - INTERVAL '604800 seconds') AND runs.event_at < now()
    AND runs.duration_seconds IS NOT NULL) AS durations) AS ranked
""",
        """\
COMMENT ON VIEW chm_duration_summary IS
'Count, nearest-rank percentiles and maximum of the run durations of the last 7 days'
""",
        """\
COMMENT ON COLUMN chm_duration_summary.count IS
'Runs with a duration in the window'
""",
        """\
COMMENT ON COLUMN chm_duration_summary.p50 IS
'Nearest-rank 50th percentile, seconds'
""",
        """\
COMMENT ON COLUMN chm_duration_summary.p90 IS
'Nearest-rank 90th percentile, seconds'
""",
        """\
COMMENT ON COLUMN chm_duration_summary.p95 IS
'Nearest-rank 95th percentile, seconds'
""",
        """\
COMMENT ON COLUMN chm_duration_summary.p99 IS
'Nearest-rank 99th percentile, seconds'
""",
        """\
COMMENT ON COLUMN chm_duration_summary.max IS
'Longest duration, seconds'
""",
        """\
COMMENT ON COLUMN chm_duration_summary.as_of IS
'Reference time: the database''s current time when the view is queried'
""",
        """\
COMMENT ON COLUMN chm_duration_summary.since IS
'Start of the event-time window (inclusive)'
""",
        """\
COMMENT ON COLUMN chm_duration_summary.until IS
'End of the event-time window (exclusive)'
""",
        """\
CREATE VIEW chm_duration_histogram AS
SELECT bins.gt_seconds, bins.le_seconds, coalesce(counts.count, 0) AS count,
    now() AS as_of, (now() - INTERVAL '604800 seconds') AS since, now() AS until
FROM (SELECT 0 AS bin, CAST(NULL AS INTEGER) AS gt_seconds, 1 AS le_seconds
    UNION ALL SELECT 1 AS bin, 1 AS gt_seconds, 5 AS le_seconds UNION ALL SELECT 2 AS bin,
    5 AS gt_seconds, 10 AS le_seconds UNION ALL SELECT 3 AS bin, 10 AS gt_seconds,
    30 AS le_seconds UNION ALL SELECT 4 AS bin, 30 AS gt_seconds, 60 AS le_seconds
    UNION ALL SELECT 5 AS bin, 60 AS gt_seconds, 120 AS le_seconds
    UNION ALL SELECT 6 AS bin, 120 AS gt_seconds, 300 AS le_seconds
    UNION ALL SELECT 7 AS bin, 300 AS gt_seconds, 600 AS le_seconds
    UNION ALL SELECT 8 AS bin, 600 AS gt_seconds, 900 AS le_seconds
    UNION ALL SELECT 9 AS bin, 900 AS gt_seconds, 1800 AS le_seconds
    UNION ALL SELECT 10 AS bin, 1800 AS gt_seconds, 3600 AS le_seconds
    UNION ALL SELECT 11 AS bin, 3600 AS gt_seconds, 7200 AS le_seconds
    UNION ALL SELECT 12 AS bin, 7200 AS gt_seconds, 14400 AS le_seconds
    UNION ALL SELECT 13 AS bin, 14400 AS gt_seconds, 28800 AS le_seconds
    UNION ALL SELECT 14 AS bin, 28800 AS gt_seconds, 86400 AS le_seconds
    UNION ALL SELECT 15 AS bin, 86400 AS gt_seconds,
    CAST(NULL AS INTEGER) AS le_seconds) AS bins LEFT OUTER JOIN (SELECT CASE
    WHEN (durations.duration_seconds <= 1) THEN 0
    WHEN (durations.duration_seconds <= 5) THEN 1
    WHEN (durations.duration_seconds <= 10) THEN 2
    WHEN (durations.duration_seconds <= 30) THEN 3
    WHEN (durations.duration_seconds <= 60) THEN 4
    WHEN (durations.duration_seconds <= 120) THEN 5
    WHEN (durations.duration_seconds <= 300) THEN 6
    WHEN (durations.duration_seconds <= 600) THEN 7
    WHEN (durations.duration_seconds <= 900) THEN 8
    WHEN (durations.duration_seconds <= 1800) THEN 9
    WHEN (durations.duration_seconds <= 3600) THEN 10
    WHEN (durations.duration_seconds <= 7200) THEN 11
    WHEN (durations.duration_seconds <= 14400) THEN 12
    WHEN (durations.duration_seconds <= 28800) THEN 13
    WHEN (durations.duration_seconds <= 86400) THEN 14 ELSE 15 END AS bin, count(*) AS count
FROM (SELECT runs.id AS run_id, pipelines.id AS pipeline_id,
    pipelines.name AS pipeline_name, clients.id AS client_id, clients.name AS client_name,
    pipelines.platform AS platform, runs.status AS status, runs.event_at AS event_at,
    runs.duration_seconds AS duration_seconds
FROM runs JOIN pipelines ON pipelines.id = runs.pipeline_id JOIN clients
    ON clients.id = pipelines.client_id
WHERE pipelines.is_active IS true AND clients.is_active IS true
    AND runs.event_at >= (now() - INTERVAL '604800 seconds') AND runs.event_at < now()
    AND runs.duration_seconds IS NOT NULL) AS durations GROUP BY bin) AS counts
    ON counts.bin = bins.bin ORDER BY bins.bin
""",
        """\
COMMENT ON VIEW chm_duration_histogram IS
'Histogram of the run durations of the last 7 days: every bin, empty ones with count 0'
""",
        """\
COMMENT ON COLUMN chm_duration_histogram.gt_seconds IS
'The previous edge: runs counted here lasted longer (null: from 0)'
""",
        """\
COMMENT ON COLUMN chm_duration_histogram.le_seconds IS
'The edge: runs counted here lasted at most this (null: no upper bound)'
""",
        """\
COMMENT ON COLUMN chm_duration_histogram.count IS
'Runs with a duration in (gt_seconds, le_seconds]'
""",
        """\
COMMENT ON COLUMN chm_duration_histogram.as_of IS
'Reference time: the database''s current time when the view is queried'
""",
        """\
COMMENT ON COLUMN chm_duration_histogram.since IS
'Start of the event-time window (inclusive)'
""",
        """\
COMMENT ON COLUMN chm_duration_histogram.until IS
'End of the event-time window (exclusive)'
""",
        """\
CREATE VIEW chm_status_changes AS
SELECT inventory.pipeline_id, inventory.pipeline_name, inventory.client_id,
    inventory.client_name, previous_run.status AS previous_status,
    current_run.status AS current_status, current_run.event_at AS changed_at,
    now() AS as_of, (now() - INTERVAL '86400 seconds') AS since, now() AS until
FROM (SELECT clients.id AS client_id, clients.name AS client_name,
    clients.name_key AS client_key, pipelines.id AS pipeline_id,
    pipelines.name AS pipeline_name, pipelines.name_key AS pipeline_key,
    pipelines.platform AS platform, pipelines.environment AS environment, (SELECT runs.id
FROM runs
WHERE runs.pipeline_id = pipelines.id
    AND runs.event_at < (now() - INTERVAL '86400 seconds')
    ORDER BY coalesce(runs.started_at, '-infinity'::timestamptz) DESC,
    coalesce(runs.finished_at, '-infinity'::timestamptz) DESC, runs.id DESC
 LIMIT 1) AS previous_run_id, (SELECT runs.id
FROM runs
WHERE runs.pipeline_id = pipelines.id AND runs.event_at < now()
    ORDER BY coalesce(runs.started_at, '-infinity'::timestamptz) DESC,
    coalesce(runs.finished_at, '-infinity'::timestamptz) DESC, runs.id DESC
 LIMIT 1) AS current_run_id
FROM pipelines JOIN clients ON clients.id = pipelines.client_id
WHERE pipelines.is_active IS true AND clients.is_active IS true) AS inventory
    JOIN runs AS current_run ON current_run.id = inventory.current_run_id
    LEFT OUTER JOIN runs AS previous_run ON previous_run.id = inventory.previous_run_id
WHERE previous_run.status IS DISTINCT FROM current_run.status
    ORDER BY inventory.client_key, inventory.client_id, inventory.pipeline_key,
    inventory.pipeline_id
""",
        """\
COMMENT ON VIEW chm_status_changes IS
'Pipelines whose latest status changed in the last 24 hours'
""",
        """\
COMMENT ON COLUMN chm_status_changes.pipeline_id IS
'Opaque server-generated id'
""",
        """\
COMMENT ON COLUMN chm_status_changes.pipeline_name IS
'pipeline name'
""",
        """\
COMMENT ON COLUMN chm_status_changes.client_id IS
'Opaque server-generated id'
""",
        """\
COMMENT ON COLUMN chm_status_changes.client_name IS
'client name'
""",
        """\
COMMENT ON COLUMN chm_status_changes.previous_status IS
'Status of the latest run before since; null when there was none'
""",
        """\
COMMENT ON COLUMN chm_status_changes.current_status IS
'Status of the latest run before until'
""",
        """\
COMMENT ON COLUMN chm_status_changes.changed_at IS
'Event time of the latest run before until'
""",
        """\
COMMENT ON COLUMN chm_status_changes.as_of IS
'Reference time: the database''s current time when the view is queried'
""",
        """\
COMMENT ON COLUMN chm_status_changes.since IS
'Start of the event-time window (inclusive)'
""",
        """\
COMMENT ON COLUMN chm_status_changes.until IS
'End of the event-time window (exclusive)'
""",
        """\
CREATE VIEW chm_stuck_runs AS
SELECT runs.id AS run_id, pipelines.id AS pipeline_id, pipelines.name AS pipeline_name,
    clients.id AS client_id, clients.name AS client_name, runs.status AS status,
    runs.started_at AS started_at, runs.event_at AS event_at, now() AS as_of,
    (now() - INTERVAL '21600 seconds') AS until
FROM runs JOIN pipelines ON pipelines.id = runs.pipeline_id JOIN clients
    ON clients.id = pipelines.client_id
WHERE pipelines.is_active IS true AND clients.is_active IS true
    AND runs.status IN ('queued', 'running')
    AND runs.event_at < (now() - INTERVAL '21600 seconds') ORDER BY runs.event_at, runs.id
""",
        """\
COMMENT ON VIEW chm_stuck_runs IS
'Runs still queued or running whose event time is more than 6 hours old'
""",
        """\
COMMENT ON COLUMN chm_stuck_runs.run_id IS
'Opaque server-generated id'
""",
        """\
COMMENT ON COLUMN chm_stuck_runs.pipeline_id IS
'Opaque server-generated id'
""",
        """\
COMMENT ON COLUMN chm_stuck_runs.pipeline_name IS
'pipeline name'
""",
        """\
COMMENT ON COLUMN chm_stuck_runs.client_id IS
'Opaque server-generated id'
""",
        """\
COMMENT ON COLUMN chm_stuck_runs.client_name IS
'client name'
""",
        """\
COMMENT ON COLUMN chm_stuck_runs.status IS
'queued or running'
""",
        """\
COMMENT ON COLUMN chm_stuck_runs.started_at IS
'started at'
""",
        """\
COMMENT ON COLUMN chm_stuck_runs.event_at IS
'started_at, else finished_at, else created_at'
""",
        """\
COMMENT ON COLUMN chm_stuck_runs.as_of IS
'Reference time: the database''s current time when the view is queried'
""",
        """\
COMMENT ON COLUMN chm_stuck_runs.until IS
'Runs whose event time is before this are stuck'
""",
        """\
CREATE VIEW chm_overdue_pipelines AS
WITH due_ticks AS MATERIALIZED
(SELECT pipelines.id AS pipeline_id, (SELECT schedule_ticks.tick_at
FROM schedule_ticks
WHERE schedule_ticks.pipeline_id = pipelines.id AND schedule_ticks.due_missed <= now()
    ORDER BY schedule_ticks.due_missed DESC
 LIMIT 1) AS expected_at, (SELECT schedule_ticks.window_start
FROM schedule_ticks
WHERE schedule_ticks.pipeline_id = pipelines.id AND schedule_ticks.due_missed <= now()
    ORDER BY schedule_ticks.due_missed DESC
 LIMIT 1) AS window_start, (SELECT schedule_ticks.due_missed
FROM schedule_ticks
WHERE schedule_ticks.pipeline_id = pipelines.id AND schedule_ticks.due_missed <= now()
    ORDER BY schedule_ticks.due_missed DESC
 LIMIT 1) AS due_missed, (SELECT schedule_ticks.due_late
FROM schedule_ticks
WHERE schedule_ticks.pipeline_id = pipelines.id AND schedule_ticks.due_missed <= now()
    ORDER BY schedule_ticks.due_missed DESC
 LIMIT 1) AS due_late
FROM pipelines
WHERE pipelines.schedule IS NOT NULL AND pipelines.schedule_ticks_until >= now())
 SELECT overdue.pipeline_id, overdue.pipeline_name, overdue.client_id, overdue.client_name,
    overdue.platform, overdue.schedule, overdue.schedule_timezone, overdue.state,
    overdue.expected_at, overdue.due_by, last_run.event_at AS last_run_at,
    last_run.status AS last_status, now() AS as_of
FROM (SELECT facts.pipeline_id AS pipeline_id, facts.pipeline_name AS pipeline_name,
    facts.client_id AS client_id, facts.client_name AS client_name,
    facts.platform AS platform, facts.schedule AS schedule,
    facts.schedule_timezone AS schedule_timezone, facts.state AS state,
    facts.expected_at AS expected_at, CASE
    WHEN (facts.state = 'missed') THEN facts.due_missed ELSE facts.due_late END AS due_by,
    (SELECT runs.id
FROM runs
WHERE runs.pipeline_id = facts.pipeline_id AND runs.event_at <= now()
    ORDER BY coalesce(runs.started_at, '-infinity'::timestamptz) DESC,
    coalesce(runs.finished_at, '-infinity'::timestamptz) DESC, runs.id DESC
 LIMIT 1) AS last_run_id
FROM (SELECT pipelines.id AS pipeline_id, pipelines.name AS pipeline_name,
    clients.id AS client_id, clients.name AS client_name, pipelines.platform AS platform,
    pipelines.schedule AS schedule, pipelines.schedule_timezone AS schedule_timezone,
    expectations.expected_at AS expected_at, expectations.due_missed AS due_missed,
    expectations.due_late AS due_late, CASE WHEN (NOT (EXISTS (SELECT *
FROM runs
WHERE runs.pipeline_id = expectations.pipeline_id
    AND runs.event_at >= expectations.window_start
    AND runs.event_at <= now()))) THEN 'missed' WHEN (expectations.due_late <= now()
    AND (EXISTS (SELECT *
FROM runs
WHERE runs.pipeline_id = expectations.pipeline_id
    AND runs.event_at >= expectations.window_start AND runs.event_at <= now()
    AND runs.event_at <= expectations.due_late AND runs.status IN ('queued',
    'running')))) THEN 'late' ELSE NULL END AS state
FROM (SELECT due_ticks.pipeline_id AS pipeline_id, due_ticks.expected_at AS expected_at,
    due_ticks.window_start AS window_start, due_ticks.due_missed AS due_missed,
    due_ticks.due_late AS due_late
FROM due_ticks
WHERE due_ticks.expected_at IS NOT NULL) AS expectations JOIN pipelines
    ON pipelines.id = expectations.pipeline_id JOIN clients
    ON clients.id = pipelines.client_id
WHERE pipelines.schedule IS NOT NULL AND expectations.due_missed <= now()
    AND pipelines.is_active IS true AND clients.is_active IS true) AS facts
WHERE facts.state IS NOT NULL) AS overdue LEFT OUTER JOIN runs AS last_run
    ON last_run.id = overdue.last_run_id ORDER BY overdue.due_by, overdue.pipeline_id
""",
        """\
COMMENT ON VIEW chm_overdue_pipelines IS
'Active scheduled pipelines whose expected run is missed or late now (stored ticks)'
""",
        """\
COMMENT ON COLUMN chm_overdue_pipelines.pipeline_id IS
'Opaque server-generated id'
""",
        """\
COMMENT ON COLUMN chm_overdue_pipelines.pipeline_name IS
'pipeline name'
""",
        """\
COMMENT ON COLUMN chm_overdue_pipelines.client_id IS
'Opaque server-generated id'
""",
        """\
COMMENT ON COLUMN chm_overdue_pipelines.client_name IS
'client name'
""",
        """\
COMMENT ON COLUMN chm_overdue_pipelines.platform IS
'platform'
""",
        """\
COMMENT ON COLUMN chm_overdue_pipelines.schedule IS
'The five-field cron expression'
""",
        """\
COMMENT ON COLUMN chm_overdue_pipelines.schedule_timezone IS
'The IANA time zone the schedule is read in'
""",
        """\
COMMENT ON COLUMN chm_overdue_pipelines.state IS
'missed: no run in [expected_at - grace, as_of]; late: one is still open at due_by'
""",
        """\
COMMENT ON COLUMN chm_overdue_pipelines.expected_at IS
'The tick expected: the latest with expected_at + grace <= as_of'
""",
        """\
COMMENT ON COLUMN chm_overdue_pipelines.due_by IS
'When it became overdue: expected_at + grace (missed) or expected_at + deadline (late)'
""",
        """\
COMMENT ON COLUMN chm_overdue_pipelines.last_run_at IS
'Event time of the latest run at or before as_of by the ordering rule; null when none'
""",
        """\
COMMENT ON COLUMN chm_overdue_pipelines.last_status IS
'That run''s stored status'
""",
        """\
COMMENT ON COLUMN chm_overdue_pipelines.as_of IS
'Reference time: the database''s current time when the view is queried'
""",
    ],
}
# --- END GENERATED VIEWS ---


def _statements_of(view: str, statements: list[str]) -> list[str]:
    """The statements that create ``view`` and comment on it and its columns."""
    heads = (f"CREATE VIEW {view} AS", f"COMMENT ON VIEW {view} IS", f"COMMENT ON COLUMN {view}.")
    return [statement for statement in statements if statement.startswith(heads)]


def upgrade() -> None:
    connection = op.get_bind()
    for statement in _statements_of(NEW_VIEW, VIEW_DDL[connection.dialect.name]):
        # The driver's own execute: the text is SQL as is, no bind parameters.
        connection.exec_driver_sql(statement)


def downgrade() -> None:
    op.get_bind().exec_driver_sql(f"DROP VIEW IF EXISTS {NEW_VIEW}")
