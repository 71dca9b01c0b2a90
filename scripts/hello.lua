-- A minimal route: GET /v1/hello?name=Ann -> {"hello":"Ann","at":<now()>}
route("GET", "/v1/hello", function(req)
  local name = req.query.name or "world"
  return 200, { hello = name, at = now() }
end)
