-- A minimal route: GET /v1/hello?name=Ann -> {"hello":"Ann","at":<now()>}
function hello(req)
  local name = req.query.name or "world"
  return 200, { hello = name, at = now() }
end

route("GET", "/v1/hello", "hello")
