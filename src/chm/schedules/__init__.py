"""Schedules (monitoring contract, "Schedules"; docs/schedules.md): when a
pipeline is expected to run, and the ticks stored for the SQL that must find
that expectation (the BI view, alert evaluation). A layer between the domains
and the tables: it imports only ``chm.core`` and ``chm.models``."""
