-- wrk script: spread GET requests over many ids, and report percentiles as JSON.
--
--   CHM_WRK_IDS=ids.txt CHM_WRK_PATH='/api/v1/pipelines/{id}/runs/latest' \
--     wrk -t2 -c16 -d10s -s bench/wrk/spread.lua http://127.0.0.1:8000
--
-- CHM_WRK_IDS names a file of ids, one a line; CHM_WRK_PATH is the request
-- path with "{id}" where the id goes. Each thread picks ids at random from its
-- own seeded generator. done() prints one line "WRK_JSON {...}" (latencies in
-- microseconds) for bench/api.py to read.

local ids = {}
for line in io.lines(os.getenv("CHM_WRK_IDS")) do
  if line ~= "" then ids[#ids + 1] = line end
end
local template = os.getenv("CHM_WRK_PATH")
local before, after = template:match("^(.*){id}(.*)$")

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("seed", threads)
end

function init(args)
  math.randomseed(7919 * (seed or 1))
end

function request()
  return wrk.format("GET", before .. ids[math.random(#ids)] .. after)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"duration_us": %d, "requests": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"mean": %.1f, "p50": %d, "p90": %d, "p95": %d, "p99": %d, "max": %d}, ' ..
    '"ids": %d}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.max, #ids))
end
