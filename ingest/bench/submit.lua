-- wrk script: POSTs the gzipped payloads in PAYLOAD_DIR (payload-000.gz ...)
-- round robin, each thread starting at a different one, to the long submission path.
local dir = os.getenv("PAYLOAD_DIR")
local bodies = {}
for i = 0, 999 do
  local f = io.open(string.format("%s/payload-%03d.gz", dir, i), "rb")
  if not f then break end
  bodies[#bodies + 1] = f:read("*a")
  f:close()
end
assert(#bodies > 0, "no payloads in " .. tostring(dir))
local n = 0
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("n", counter * 17)
end
request = function()
  n = n + 1
  local body = bodies[(n % #bodies) + 1]
  local path = string.format(
    "/submit/telemetry/%08x-1ee4-4b4b-9a0b-3ac7a9c0c0f1/saved-session/Firefox/22.0a1/nightly/20130226031002", n)
  return wrk.format("POST", path, {["Content-Encoding"] = "gzip",
    ["Content-Type"] = "application/json; charset=UTF-8"}, body)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT req/s=%.0f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f requests=%d non2xx_or_errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
