"""``GET /metrics``: Prometheus metrics (monitoring contract, "Operator web page";
docs/metrics.md).

- ``collector.py``: the inventory's metrics, computed from the database at
  scrape time by a custom collector (firing alerts, pipelines by latest
  status, runs ingested, each source's health, deliveries, workers): the same
  whichever server process answers;
- ``http.py``: each request counted and timed by a middleware, labelled by
  its route's template, never its raw path;
- ``multiprocess.py``: ``chm serve --workers N`` shares the HTTP metrics of
  its processes through prometheus_client's multiprocess mode;
- ``router.py``: the endpoint (Prometheus text or OpenMetrics).

No label ever holds an unbounded value: no run, pipeline or alert id, no
pipeline name, no error text, no raw path.
"""
