-- wrk script for benches/proxy.sh. One request, built once per thread:
--   wrk ... -s proxy-wrk.lua URL -- get              GET /v1/tasks/{id}
--   wrk ... -s proxy-wrk.lua URL -- create           POST /v1/image_to_video, small JSON body
--   wrk ... -s proxy-wrk.lua URL -- upload BYTES     POST /v1/sink, a JSON body of BYTES bytes:
--                                                    a data URI first, "model" last
-- Every request carries an Authorization header, as the SDKs' do. At the end one line:
--   RESULT requests=N duration_us=N p50_us=N p99_us=N errors=N non2xx=N bytes=N

local req

local function headers(extra)
  local h = { ["Authorization"] = "Bearer key_bench", ["X-Runway-Version"] = "2024-11-06" }
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end

init = function(args)
  local mode = args[1]
  if mode == "get" then
    req = wrk.format("GET", "/v1/tasks/17f20503-6c24-4c16-946b-35dbbce2af2f", headers())
  elseif mode == "create" then
    local body = '{"model":"gen4_turbo","promptImage":"https://example.com/cat.png",'
      .. '"promptText":"a cat walks","ratio":"1280:720","duration":5}'
    req = wrk.format("POST", "/v1/image_to_video",
      headers({ ["Content-Type"] = "application/json" }), body)
  elseif mode == "upload" then
    local size = tonumber(args[2])
    local open = '{"promptImage":"data:image/png;base64,'
    local close = '","model":"gen4_turbo"}'
    local body = open .. string.rep("A", size - #open - #close) .. close
    req = wrk.format("POST", "/v1/sink",
      headers({ ["Content-Type"] = "application/json" }), body)
  else
    error("proxy-wrk.lua: mode must be get, create or upload")
  end
end

request = function()
  return req
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d non2xx=%d bytes=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status, summary.bytes))
end
