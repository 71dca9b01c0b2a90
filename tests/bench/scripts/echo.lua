-- Benchmark route: decode the JSON body, answer with a small JSON object.
function bench_echo(req)
  local body = req:json()
  return 200, { ok = true, client_id = body.client_id, n = #body.text }
end
route("POST", "/bench/echo", "bench_echo")
