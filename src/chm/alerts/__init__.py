"""Alerts (monitoring contract, "Alerts" and "Delivery"; docs/alerts.md).

``evaluate`` turns the rules into alerts (set-based SQL, one statement per
rule type) and writes their deliveries in the same transaction (the outbox);
``delivery`` sends them, grouped per destination, through the ``channels``;
``router``/``service`` serve alerts and silences. Ingestion never imports
this package: the worker calls evaluation after ingestion changed runs.
"""
