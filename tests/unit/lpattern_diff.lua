-- Differential test of core/lpattern.c against stock Lua 5.4 (compiled into
-- unit_tests by the Makefile). Called with the table of functions under test
-- (find, match, gmatch, gsub) and the number of random cases; runs every case
-- once with the stock functions and once with those, each time installed in
-- the real string table (so method calls and error messages see the same
-- names), and compares every result, type and error text. The random cases
-- use a fixed seed unless a third argument gives another.
-- Returns: cases compared, cases that differed, report of the first ones.
local mine, random_count, seed = ...
local names = { "find", "match", "gmatch", "gsub" }
local stock = {}
for _, k in ipairs(names) do stock[k] = string[k] end
-- the driver itself must not call the functions it swaps
local format, rep, char, upper = string.format, string.rep, string.char, string.upper
local concat, pack, unpack = table.concat, table.pack, table.unpack

local function use(impl)
  for _, k in ipairs(names) do string[k] = impl[k] end
end

local function show(v)
  local t = type(v)
  if t == "string" then return format("%q", v) end
  if t == "number" then return math.type(v) .. " " .. format("%.17g", v) end
  if t == "boolean" or t == "nil" then return tostring(v) end
  return t
end

local function show_all(r)
  local out = {}
  for i = 1, r.n do out[i] = show(r[i]) end
  return "(" .. concat(out, ", ") .. ")"
end

local log = {}   -- what replacement functions were called with, in order

local function recorder(result)
  return function(...)
    log[#log + 1] = show_all(pack(...))
    return result(...)
  end
end

local cases = {}
local function add(...) cases[#cases + 1] = pack(...) end
-- a case written as code, for method calls, coroutines and the like
local function addf(desc, f) cases[#cases + 1] = { n = 0, f = f, desc = desc } end

local function run(c)
  log = {}
  local out = {}
  local ok, err = pcall(function()
    if c.f then
      out[#out + 1] = show_all(pack(c.f()))
    elseif c[1] == "gmatch" then
      local it = string.gmatch(unpack(c, 2, c.n))
      for _ = 1, 100000 do
        local r = pack(it())
        out[#out + 1] = show_all(r)
        if r[1] == nil then break end
      end
    else
      out[#out + 1] = show_all(pack(string[c[1]](unpack(c, 2, c.n))))
    end
  end)
  if not ok then out[#out + 1] = "error " .. show(err) end
  return concat(out, " ") .. " " .. concat(log, " ")
end

local function describe(c)
  if c.f then return c.desc end
  local t = {}
  for i = 1, c.n do t[i] = show(c[i]) end
  return concat(t, ", ")
end

---------------------------------------------------------------------------
-- hand-written cases

-- find: plain and pattern paths, init, plain flag, captures, coercions
add("find", "hello world", "o w")
add("find", "hello world", "o", 6)
add("find", "hello", "l")
add("find", "hello", "xyz")
add("find", "hello", "")
add("find", "", "")
add("find", "", "a")
add("find", "", "a*")
for init = -8, 8 do
  add("find", "hello", "", init)
  add("find", "hello", "l", init)
  add("find", "hello", "l+", init)
  add("find", "hello", "^h", init)
  add("find", "hello", "o$", init)
  add("match", "hello", ".", init)
  add("match", "hello", "()", init)
  add("gmatch", "hello", ".", init)
  add("gmatch", "hello", "", init)
end
add("find", "hello", "l", math.mininteger)
add("find", "hello", "l", math.maxinteger)
add("find", "hello", "", math.maxinteger)
add("find", "hello", "l", "2")
add("find", "hello", "l", 2.0)
add("find", "hello", "l", 2.5)
add("find", "hello", "l", "x")
add("find", "hello", "l", {})
add("find", "a.b", ".", 1, true)
add("find", "a.b", ".", 1, false)
add("find", "a.b", ".", 1, 0)
add("find", "a.b", ".", 1, "")
add("find", "a.b", ".", 1, nil)
add("find", "a.b", "%.")
add("find", "a+b", "+", 1, true)
add("find", "a+b", "a+b")
add("find", "a+b", "a+b", 1, true)
add("find", "a+b", "a%+b")
add("find", "a)b", "a)")
add("find", "a)b", "a)b")
add("find", "a]b", "]")
add("find", "a\0b", "\0")
add("find", "a\0b", "b", 1, true)
add("find", "a\0b\0", "\0", 3, true)
add("find", "a\0b\0", "%z")
add("find", 12345, 34)
add("find", 12345, 3.0)
add("find", 1.5, ".")
add("find", nil, "a")
add("find", "a", nil)
add("find", "a", {})
add("find")
add("find", "hello world", "(o)(r)")
add("find", "hello world", "(o)( )")
add("find", "abc", "()b()")
add("find", "key=val", "(%w+)=(%w+)")
add("find", "key=val", "((%w+)=(%w+))")
add("find", "aaa", "(a)(a)(a)")
add("find", "xyz", "(x)(y)(z)(w)")
add("find", "abc", "(a")
add("find", "abc", "(a)%1")
add("find", ("x"):rep(100) .. "needle" .. ("y"):rep(100), "needle")
add("find", ("x"):rep(100) .. "needle" .. ("y"):rep(100), "needle", 100)
add("find", ("x"):rep(100) .. "needle" .. ("y"):rep(100), "needle", 102)
add("find", ("x"):rep(100) .. "needle" .. ("y"):rep(100), "needle", -106)
add("find", ("x"):rep(100) .. "needle" .. ("y"):rep(100), "needle", -105)
add("find", ("ab"):rep(50), ("ab"):rep(50))
add("find", ("ab"):rep(50), ("ab"):rep(51))
add("find", ("ab"):rep(50), "ba", 1, true)
addf("method find", function() return ("hello"):find("l") end)
addf("method find, bad init", function() return ("hello"):find("l", {}) end)
addf("method find, no pattern", function() return ("hello"):find() end)
addf("method gsub, bad repl", function() return ("hello"):gsub("l") end)

-- match: the whole match or the captures
add("match", "hello world", "%w+")
add("match", "hello world", "%w+", 6)
add("match", "  trim me  ", "^%s*(.-)%s*$")
add("match", "", "^%s*(.-)%s*$")
add("match", "     ", "^%s*(.-)%s*$")
add("match", "key = value", "(%w+)%s*=%s*(%w+)")
add("match", "2024-01-15", "(%d+)-(%d+)-(%d+)")
add("match", "abc", "()b()")
add("match", "abc", "()")
add("match", "abc", "^b")
add("match", "abc", "^a")
add("match", "abc", "^^a")
add("match", "^abc", "^^a")
add("match", "abc", "c$")
add("match", "abc", "b$")
add("match", "a$b", "$b")
add("match", "a$b", "a$b")
add("match", "a$", "a$$")
add("match", "a$", "a%$$")
add("match", "abc", "$")
add("match", "abc", "^$")
add("match", "", "^$")
add("match", "abc", "a$c")
add("match", "THE (quick) fox", "%((%a+)%)")
add("match", "f(a(b)c)d", "%b()")
add("match", "f(a(b)c d", "%b()")
add("match", "f(a(b)c d)", "%b()")
add("match", "[[x]]", "%b[]")
add("match", "abcbc", "%bac")
add("match", "aaa", "%baa")
add("match", "'a' 'b'", "%b''")
add("match", "x(a)", "x%b()$")
add("match", "(", "%b()")
add("match", "", "%b()")
add("match", "THE (quick) fox", "%f[%a]%a+")
add("match", "hello world", "%f[%w]%w+$")
add("match", "THE (quick) fox", "%f[%l]%a+")
add("match", "abc", "%f[%z]")
add("match", "abc", "()%f[%z]")
add("match", "abc", "%f[^%z]()")
add("match", "a\0b", "()%f[%z]")
add("match", "abc", "%f[a]()")
add("match", "abc", "%f[^a]()")
add("match", "abc", "%f[b]()", 2)
add("match", "the cat", "%f[%w]%w+%f[%W]")
add("match", 'he said "hi" ok', "([\"'])(.-)%1")
add("match", "he said 'hi' ok", "([\"'])(.-)%1")
add("match", "abab", "(ab)%1")
add("match", "abac", "(ab)%1")
add("match", "aa", "(a)%2")
add("match", "a", "%1")
add("match", "a", "%0")
add("match", "a", "(a)%0")
add("match", "a", "(a%1)")
add("match", "aa", "()a%1")
add("match", "abcabc", "(a(b)c)%1")
add("match", "abcb", "(a(b)c)%2")
add("match", "xx", "(x)%1%1")
add("match", "aaab", "a-b")
add("match", "aaab", "a*")
add("match", "aaab", "a+")
add("match", "aaab", "a?")
add("match", "b", "a?b")
add("match", "ab", "a?b")
add("match", "aab", "a?b")
add("match", "", "a*")
add("match", "", "a+")
add("match", "", "a-")
add("match", "", "a?")
add("match", "xyz", "x*")
add("match", "aaa", "^(a-)$")
add("match", "aaa", "^(a-)")
add("match", "aaa", "(a*)(a)")
add("match", "aaa", "(a-)(a)")
add("match", "aaa", "(a+)(a+)")
add("match", "a*b", "a*%*b")
add("match", "a**", "a**")
add("match", "a+", "a++")
add("match", "a-", "a--")
add("match", "a?", "a??")
add("match", "a", "a?+")
add("match", "xa", "x-+")
add("match", "]", "[]]")
add("match", "a]", "[]a]+")
add("match", "^", "[%^]")
add("match", "^", "[^^]")
add("match", "a^", "[a^]+")
add("match", "a-z", "[a-]+")
add("match", "-", "[-a]")
add("match", "-", "[a-]")
add("match", "b", "[a-c]")
add("match", "B", "[a-c]")
add("match", "%", "[%%]")
add("match", "x", "[%a-z]")
add("match", "-", "[%a-z]")
add("match", "]", "[%]]")
add("match", "a-%]", "[a-%]]+")
add("match", "a-%]", "[%a-%]]+")
add("match", "z", "[a-%]]")
add("match", "%", "[a-%]]")
add("match", "]x", "[^]]")
add("match", "x", "[^%a]")
add("match", "1", "[^%a]")
add("match", "a1_", "[%w_]+")
add("match", "A", "[%u%d]")
add("match", "b", "[^a-c]")
add("match", "d", "[^a-c]")
add("match", "c", "[c-a]")
add("match", "[", "[[]")
add("match", "x[", "[x[]+")
add("match", "\0", "[\0]")
add("match", "a\0b", "[\0-b]+")
add("match", "a\0b", "\0b")
add("match", "a\0b", "%z")
add("match", "a\0b", "%\0")
add("match", "a\0b", "[%z]")
add("match", "a\0b", ".%z?b")
add("match", "é", "%a")
add("match", "\255\128", "[\128-\255]+")
-- malformed patterns, and when their errors are raised
add("match", "a", "%")
add("match", "a", "a%")
add("match", "b", "a%")
add("match", "a", "[a")
add("match", "a", "[a%]")
add("match", "a", "[a%")
add("match", "a", "[")
add("match", "a", "[^")
add("match", "a", "[]")
add("match", "a", "[^]")
add("match", "x", "a[")
add("match", "a", "(a")
add("match", "a", "a)")
add("match", "a", ")")
add("match", "a", "(()")
add("match", "a", "%b")
add("match", "a", "%ba")
add("match", "", "%b")
add("match", "a", "%f")
add("match", "a", "%fa")
add("match", "a", "%f[a")
add("match", "a", "%f[")
add("match", "a", "x%f")
add("match", "a", rep("(", 32) .. "a" .. rep(")", 32))
add("match", "a", rep("(", 33) .. "a" .. rep(")", 33))
add("match", "a", rep("()", 32))
add("match", "a", rep("()", 33))
add("match", "a", "%1")
add("match", "a", "()%1")
add("match", "aa", "(a)%1")
add("match", "a", "(a)%9")
add("match", "a", "(%1)")
add("gmatch", "a", "%")
add("gmatch", "a", "(")
add("gmatch", "a", "[a")
add("gsub", "a", "[a", "x")
add("gsub", "a", "[a", "x", 0)
add("gsub", "a", "%", "x", -1)
add("find", "a", "[a", 3)
add("find", "a", "%", 3)
-- the nesting limit of 200 matches, along every path that nests
for k = 196, 204 do
  add("match", rep("a", k), rep("a?", k))
  add("match", rep("a", k), rep("(a)", k > 200 and 1 or 0) .. rep("a?", k))
  add("find", rep("a", 300), rep("x*a", k))
  add("find", rep("a", 300), rep("x-a", k))
  add("find", rep("a", 300), rep("a*", k))
  add("find", rep("a", 300), rep("a-", k))
  add("find", rep("ab", 150), rep("a-b", k))
  add("find", rep("a", 300), rep("%a*", k) .. "$")
  add("find", rep("a", 300), rep("()a", k > 200 and 1 or 0) .. rep("[a]*", k))
end
-- '*' and '-' followed by ')' and a character, with and without a capture to close
for _, p in ipairs { "(%w+)=", "((%w+))=", "(%w+))=", "%w+)=", "(a*))b", "(a-)b", "(a-))b", "((a-)))b", "(()a*)b",
                     "(a*)()b", "((a)*)b", "(.-))", "(.*)%)", "x(a*)b", "(a*)b(a-)c", "()a-)b", "(a+)a" } do
  for _, subj in ipairs { "ab=c aaa=b", "aaab", "(aab))b", "xaab", "aaabaac" } do
    add("match", subj, p)
    add("gsub", subj, p, "<%0>")
  end
end
-- around the nesting limit (tails that succeed at once: "a?" backtracks exponentially)
for j = 0, 14 do
  add("find", rep("a", 400), rep("a?", 188 + j) .. "(x*)a")
  add("find", rep("a", 400), rep("a?", 188 + j) .. "((x-))a")
  add("find", rep("a", 400), rep("a?", 188 + j) .. "(((x*)))a")
  add("find", rep("a", 300) .. "b", rep("a?", 188 + j) .. "(%a*)b")
  add("find", rep("a", 300) .. "b", rep("a?", 188 + j) .. "(.-)b")
end
add("match", rep("a", 40), rep("(a)", 32))
add("match", rep("a", 40), rep("(a)", 33))

-- gmatch: iteration, empty matches, init, '^' is an ordinary character
add("gmatch", "hello world from lua", "%a+")
add("gmatch", "k1=v1, k2=v2", "(%w+)=(%w+)")
add("gmatch", "abc", "")
add("gmatch", "", "")
add("gmatch", "abc", "a*")
add("gmatch", "aaa", "a-")
add("gmatch", "aaa", "a*")
add("gmatch", "baaac", "a*")
add("gmatch", "abc", "()")
add("gmatch", "abc", "()(.)")
add("gmatch", "a^b", "^b")
add("gmatch", "^a^b", "^.")
add("gmatch", "ab", "^")
add("gmatch", "one two  three", "%S+")
add("gmatch", "one two  three", "%s*")
add("gmatch", "a,b,,c", "([^,]*)")
add("gmatch", "a,b,,c", "[^,]+")
add("gmatch", "12 ab 345 c6", "%d+")
add("gmatch", "x\0y\0z", "[^\0]+")
add("gmatch", "the (quick) (brown) fox", "%b()")
add("gmatch", "THE (quick) fox", "%f[%a]%a+")
add("gmatch", "abc", ".", 2)
add("gmatch", "abc", ".", 10)
add("gmatch", "abc", "$")
add("gmatch", "abc", "c$")
add("gmatch", "aaa", "(a)%1")
add("gmatch")
add("gmatch", "abc")
add("gmatch", "abc", ".", "x")
addf("gmatch, called again after the end", function()
  local it = string.gmatch("ab", ".")
  return it(), it(), it(), it()
end)
addf("gmatch, two iterators interleaved", function()
  local a, b = string.gmatch("abc", "."), string.gmatch("xyz", ".")
  return a(), b(), a(), b()
end)
addf("gmatch, iterator error then again", function()
  local it = string.gmatch("ab(", "[ab(](")
  local r1 = pack(pcall(it))
  local r2 = pack(pcall(it))
  return show_all(r1), show_all(r2)
end)
addf("gmatch, generic for", function()
  local t = {}
  for k, v in ("a=1&b=2&c"):gmatch("(%w+)=?(%w*)") do t[#t + 1] = k .. ":" .. v end
  return concat(t, ";")
end)

-- gsub: string, table and function replacements; counts; errors
add("gsub", "hello world", "o", "0")
add("gsub", "hello world", "o", "0", 1)
add("gsub", "hello world", "o", "0", 0)
add("gsub", "hello world", "o", "0", -1)
add("gsub", "hello world", "o", "0", 2.0)
add("gsub", "hello world", "o", "0", 2.5)
add("gsub", "hello world", "o", "0", "1")
add("gsub", "hello world", "o", "0", math.maxinteger)
add("gsub", "hello world", "o", "0", math.mininteger)
add("gsub", "hello", "", "-")
add("gsub", "", "", "-")
add("gsub", "", "x*", "-")
add("gsub", "abc", "%w", "%0%0")
add("gsub", "abc", "%w", "%1")
add("gsub", "abc", "%w", "%2")
add("gsub", "abc", "(%w)", "%2")
add("gsub", "abc", "(%w)", "%1%0%1")
add("gsub", "abc", "%w", "%")
add("gsub", "abc", "%w", "x%")
add("gsub", "abc", "%w", "%x")
add("gsub", "abc", "%w", "%\0")
add("gsub", "abc", "%w", "%%")
add("gsub", "abc", "%w", "100%%")
add("gsub", "abc", "d", "%x")
add("gsub", "abc", "(b)(", "%1")
add("gsub", "hello world", "(%w+)", "<%1>")
add("gsub", "hello world", "%w+", "%0 %0", 1)
add("gsub", "hello world", "(%w+) (%w+)", "%2 %1")
add("gsub", "abc", "b", 5)
add("gsub", "abc", "b", 5.5)
add("gsub", "abc", "b", -0.0)
add("gsub", "abc", "b", math.mininteger)
add("gsub", "abc", "()", "%1")
add("gsub", "abc", "()", "[%1]")
add("gsub", "abc", "()(b)", "%1%2")
add("gsub", "abc", "^a", "x")
add("gsub", "aaa", "^a", "x")
add("gsub", "aaa", "^a*", "x")
add("gsub", "aaa", "^", "x")
add("gsub", "abc", "$", "x")
add("gsub", "abc", "a*", "-")
add("gsub", "baaac", "a*", "-")
add("gsub", "abc", "x*", "-")
add("gsub", "abc", "x*", "-", 2)
add("gsub", "a b c", "%s", "")
add("gsub", "  a  b  ", "^%s+", "")
add("gsub", "  a  b  ", "%s+$", "")
add("gsub", "a,b,,c", ",", ";")
add("gsub", "a\0b\0c", "%z", "<0>")
add("gsub", "a\0b\0c", "\0", "")
add("gsub", "abc", "b", "\0")
add("gsub", "abc", ".", { a = "A", b = false, c = 3 })
add("gsub", "abc", ".", { a = 1.5 })
add("gsub", "abc", ".", { a = true })
add("gsub", "abc", ".", { a = {} })
add("gsub", "abc", ".", { b = print })
add("gsub", "abc", ".", {})
add("gsub", "abc", "(.)(.)", { a = "1", b = "2" })
add("gsub", "abc", "()", { "one", "two", "three", "four" })
add("gsub", "abc", "()", { [2] = false, [3] = "z" })
add("gsub", "abc", ".", setmetatable({}, { __index = function(_, k) return k .. k end }))
add("gsub", "abc", ".", recorder(function(c) return upper(c) end))
add("gsub", "abc", ".", recorder(function() return nil end))
add("gsub", "abc", ".", recorder(function() return false end))
add("gsub", "abc", ".", recorder(function() return true end))
add("gsub", "abc", ".", recorder(function() return 7 end))
add("gsub", "abc", ".", recorder(function() return 0.5 end))
add("gsub", "abc", ".", recorder(function() return {} end))
add("gsub", "abc", ".", recorder(function() end))
add("gsub", "abc", ".", recorder(function() return "x", "y" end))
add("gsub", "abc", "b", recorder(function() error("boom") end))
add("gsub", "abc", "b", recorder(function() error({}) end))
add("gsub", "abc", "()(.)()", recorder(function(a, b, c) return a .. b .. c end))
add("gsub", "abc", "(a)(", recorder(function() return "x" end))
add("gsub", "k=v, x=y", "(%w+)=(%w+)", recorder(function(k, v) return v .. "=" .. k end))
add("gsub", "abc", "", recorder(function(...) return select("#", ...) end))
add("gsub", "abc", "x*", recorder(function(m) return "<" .. m .. ">" end), 2)
add("gsub", "abc", ".", recorder(function(c) return c == "b" and "B" or nil end), 2)
add("gsub", "abc", ".", recorder(function(c) return string.gsub(c, ".", "%0%0") end))
add("gsub", "abc", "a", "x", {})
add("gsub", "abc", "a")
add("gsub", "abc", "a", true)
add("gsub", "abc", "a", nil)
add("gsub", "abc", "a", nil, "x")
add("gsub", "abc", {}, "x")
add("gsub", 123, 2, 9)
add("gsub", 123, "x", 9)
add("gsub", "abc")
addf("gsub returns the original string when nothing changed", function()
  local s = "abc"
  local r, n = string.gsub(s, ".", { z = 1 })
  return rawequal(r, s), n
end)

-- every class and set against all 256 byte values
local all = {}
for i = 0, 255 do all[#all + 1] = char(i) end
all = concat(all)
for _, cl in ipairs { "a", "c", "d", "g", "l", "p", "s", "u", "w", "x", "z", "." , "%", "b0" } do
  add("gsub", all, "%" .. cl, "")
  add("gsub", all, "%" .. upper(cl), "")
  add("gsub", all, "[%" .. cl .. "]", "")
  add("gsub", all, "[^%" .. upper(cl) .. "]", "")
end
for _, set in ipairs { "[a-f]", "[^a-f]", "[%a%d]", "[a-]", "[-a]", "[]a]", "[^]a]", "[%]]", "[\0-\31]",
                       "[\128-\255]", "[%w_-]", "[a-c-e]", "[%--/]", "[z-a]", "[^%s%p]" } do
  add("gsub", all, set, "")
  add("gsub", all, set .. "+", "<%0>")
  add("gsub", all, "%f" .. set, "|")
end

-- longer subjects, so the skipping shortcuts have room to work
local text = rep("word 123 key=value, (x(y)z) 'q' ", 40)
for _, p in ipairs { "%s+", "%d+", "%a+", "(%w+)=(%w+)", "o.-3", "o.*3", "%a*o", "[%w_]+", "%b()", "'.-'",
                     "%f[%w]%w+", "(.-),", "(.*),", "([^,]*),", "%S+", "k.-=", "e.*e", ".-%d", "x%(", "%(.-%)",
                     "[,=]", "=", "(o)(r)", "z)", "%s*$", "^%s*(.-)%s*$", "y*", "()d" } do
  add("gsub", text, p, "<%0>")
  add("match", text, p, 37)
  add("find", text, p, 100)
  add("gmatch", text, p)
end

---------------------------------------------------------------------------
-- random cases over a small alphabet, fixed seed

math.randomseed(seed or 20240611)
local R = math.random
local sub_small = { "a", "b", "a", "b", "c" }
local sub_wide = { "a", "b", "c", "(", ")", "%", "[", "]", "^", "$", ".", "-", "*", "+", "?", " ", "1", "\0", "A", "," }
local pieces = {
  "a", "b", "c", "(", ")", "%", "[", "]", "^", "$", ".", "-", "*", "+", "?", " ", "1", "\0", ",",
  "%a", "%d", "%s", "%w", "%A", "%S", "%p", "%x", "%l", "%u", "%c", "%g", "%%", "%.", "%(", "%]", "%-", "%z",
  "%b()", "%bab", "%b", "%f[%w]", "%f[a]", "%f[^a]", "%f", "[ab]", "[^a]", "[a-c]", "[%a]", "[]]", "[^]]",
  "[a-]", "[%]a]", "[\0a]", "()", "%1", "%2", "%0", "a*", "a-", "a+", "a?", ".-", ".*", "b*", "(a)", "(.)",
  "[ab]*", "[ab]-", "%a+",
}
local function rand_subject()
  local alphabet = R(2) == 1 and sub_small or sub_wide
  local t = {}
  for i = 1, R(0, 12) do t[i] = alphabet[R(#alphabet)] end
  return concat(t)
end
local function rand_pattern()
  local t = {}
  for i = 1, R(0, 6) do t[i] = pieces[R(#pieces)] end
  local p = concat(t)
  if R(6) == 1 then p = "^" .. p end
  return p
end
local function rand_init(s)
  if R(10) <= 4 then return nil end
  return R(-#s - 3, #s + 3)
end
local repl_pieces = { "x", "%0", "%1", "%2", "%%", "%", "%a", "y", "", "%9" }
local function rand_repl()
  local r = R(12)
  if r <= 7 then
    local t = {}
    for i = 1, R(0, 4) do t[i] = repl_pieces[R(#repl_pieces)] end
    return concat(t)
  elseif r == 8 then
    return { a = "A", b = false, ["("] = 7, [1] = "one", [2] = {}, [" "] = "_" }
  elseif r == 9 then
    return R(0, 99)
  elseif r == 10 then
    return recorder(function(c) return type(c) == "string" and upper(c) or c end)
  elseif r == 11 then
    return recorder(function(c) if c == "b" then return nil end return "[" .. tostring(c) .. "]" end)
  end
  return recorder(function(...) if select("#", ...) > 1 then return {} end return false end)
end

for _ = 1, random_count do
  local s, p = rand_subject(), rand_pattern()
  local op = R(4)
  if op == 1 then
    local plain = R(5)
    if plain <= 3 then
      add("find", s, p, rand_init(s))
    else
      add("find", s, p, rand_init(s) or 1, plain == 4)
    end
  elseif op == 2 then
    add("match", s, p, rand_init(s))
  elseif op == 3 then
    add("gmatch", s, p, rand_init(s))
  else
    local r = R(5)
    if r == 1 then
      add("gsub", s, p, rand_repl(), R(-1, 3))
    else
      add("gsub", s, p, rand_repl())
    end
  end
end

---------------------------------------------------------------------------

local differ, report = 0, {}
for _, c in ipairs(cases) do
  use(stock)
  local a = run(c)
  use(mine)
  local b = run(c)
  use(stock)
  if a ~= b then
    differ = differ + 1
    if #report < 10 then
      report[#report + 1] = describe(c) .. "\n    stock: " .. a .. "\n    mine:  " .. b
    end
  end
end
return #cases, differ, concat(report, "\n")
