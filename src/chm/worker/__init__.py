"""``chm worker``: keeps CHM current (docs/worker.md).

Scheduled ingestion of every pull source, ingestion jobs, retention, and the
leases that let many workers share the work through the database. It calls
ingestion (and, later, alerts); nothing below it calls the worker.
"""
