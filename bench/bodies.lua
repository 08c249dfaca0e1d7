-- wrk: POST the bodies of BODIES (<u32 length><body> records) round-robin, each thread from its own
-- part of the file so no two requests carry the same event id while the file lasts.
local bodies, idx = {}, 0
function init(args)
  local f = assert(io.open(os.getenv("BODIES"), "rb"))
  local data = f:read("*a")
  f:close()
  local pos = 1
  while pos < #data do
    local a, b, c, d = data:byte(pos, pos + 3)
    local n = a + b * 256 + c * 65536 + d * 16777216
    bodies[#bodies + 1] = data:sub(pos + 4, pos + 3 + n)
    pos = pos + 4 + n
  end
  idx = (thread_no or 0) * math.floor(#bodies / 2)
end
local counter = 0
function setup(thread)
  thread:set("thread_no", counter)
  counter = counter + 1
end
if os.getenv("PHASE") then  -- as below, but only in even phases of PHASE ms by the wall clock (phases.py)
  local ffi = require("ffi")
  ffi.cdef[[ typedef struct { long sec; long nsec; } wall_t; int clock_gettime(int, wall_t *); ]]
  local wall, phase, pause = ffi.new("wall_t"), tonumber(os.getenv("PHASE")), tonumber(os.getenv("DELAY"))
  function delay()
    ffi.C.clock_gettime(0, wall)
    local into = (tonumber(wall.sec) * 1000 + tonumber(wall.nsec) / 1e6) % (2 * phase)
    if into + pause < phase then return pause end
    return 2 * phase - into + math.random() * pause  -- the next even phase, the connections spread over a pause
  end
elseif os.getenv("DELAY") then  -- a side load at about connections × 1000 / DELAY requests a second
  function delay() return tonumber(os.getenv("DELAY")) end
end
function request()
  idx = idx + 1
  return wrk.format("POST", os.getenv("TARGET_PATH"), {
    ["Content-Encoding"] = os.getenv("ENCODING"),
    ["X-Sentry-Auth"] = "Sentry sentry_version=7, sentry_key=0123456789abcdef0123456789abcdef",
  }, bodies[(idx % #bodies) + 1])
end
