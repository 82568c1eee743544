"""``chm worker`` (monitoring contract: The worker; docs/worker.md).

Exit codes: 0 stopped by SIGTERM/SIGINT, 1 the database failed or another
worker holds this SQLite database, 2 bad configuration (an invalid sources
file: the file, the source and the field named).
"""

from __future__ import annotations

import logging
import os
import sys

from chm.cli.runtime import (
    EXIT_FAILED,
    EXIT_OK,
    configure_logging,
    fail,
    load_settings,
    open_database,
)


def worker() -> None:
    """Keep CHM current: ingest every pull source on its interval_s, run ingestion
    jobs, evaluate the alert rules and send their notifications, prune old runs
    (CHM_RETENTION_DAYS). Stops on SIGTERM or Ctrl-C."""
    from chm.alerts.destinations import DestinationsError
    from chm.core.timeutil import utcnow
    from chm.ingestion.config import ConfigError
    from chm.worker.alerts import LiveDestinations
    from chm.worker.context import LiveSources, WorkerContext
    from chm.worker.loop import Worker
    from chm.worker.registry import WorkerRefused, clock_skew_s, new_worker_id

    settings = load_settings()
    configure_logging(settings.log_level)
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings.register_secrets()
    problems = settings.production_problems()
    if problems:
        raise fail("; ".join(problems), code=EXIT_FAILED)
    log = logging.getLogger("chm.worker")
    sources = LiveSources(settings.config, settings.env)
    destinations = LiveDestinations(settings.config)
    try:
        loaded = sources.load_initial()
        destinations.load_initial()
    except (ConfigError, DestinationsError) as error:
        raise fail(str(error)) from None
    if loaded is None:
        log.warning("CHM_CONFIG is not set: no scheduled ingestion (jobs fail until it is)")
    with open_database(settings) as engine:
        ctx = WorkerContext(engine, settings, new_worker_id(), utcnow, sources)
        runner = Worker(ctx, destinations=destinations)
        try:
            runner.registration.register()
        except WorkerRefused as refused:
            raise fail(str(refused), code=EXIT_FAILED) from None
        skew = clock_skew_s(engine, utcnow())
        if abs(skew) > settings.worker_lease_s / 6:
            log.error(
                "this machine's clock is %.1f s %s the database server's: leases (%g s) "
                "assume clocks within %g s of each other; synchronize them (NTP)",
                abs(skew), "ahead of" if skew > 0 else "behind",
                settings.worker_lease_s, settings.worker_lease_s / 3,
            )  # fmt: skip
        scheduled = [s for s in (loaded.all if loaded else []) if s.pulls and s.interval_s > 0]
        log.info(
            "worker %s started on %s: %d scheduled sources, retention %s",
            ctx.worker_id,
            engine.dialect.name,
            len(scheduled),
            f"{settings.retention_days} days" if settings.retention_days else "off",
        )
        in_time = runner.serve(settings.shutdown_timeout_s)
    if not in_time:
        # The abandoned work thread may sit in a request: leave without it.
        logging.shutdown()
        sys.stderr.flush()
        os._exit(EXIT_OK)
