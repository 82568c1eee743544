from factories import API, make_client, make_pipeline, make_run, ok


def test_smoke(api):
    c = make_client(api, "Acme")
    p = make_pipeline(api, c, "orders_daily")
    r1 = make_run(api, p, "failed", started_at="2026-01-01T10:00:00Z", finished_at="2026-01-01T10:05:00+00:00")
    r2 = make_run(api, p, "success", started_at="2026-01-02T10:00:00")
    print(r1, r2)
    latest = ok(api.get(f"{API}/pipelines/{p['id']}/runs/latest"))
    assert latest["id"] == r2["id"]
    s = ok(api.get(f"{API}/clients/{c['id']}/summary", params={"since": "2026-01-01T00:00:00Z", "until": "2026-01-03T00:00:00Z"}))
    print(s)
    assert s["total_runs"] == 2
