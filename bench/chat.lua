-- chat.lua: wrk script for bench/run.sh — POSTs one ~300-byte chat completion body on every
-- request (argument 1: the mock's delay in ms, sent as @mock:delay=N in the body; argument 2,
-- optional: more directives such as "stream=100,interval=100", which also make it a streaming
-- request) and prints one machine-readable RESULT line when the run is done.

local req

-- The body is built once, padded to 300 bytes so every target parses the same payload.
local function chat_body(delay, more)
    local stream = more and ',"stream":true' or ''
    local extra = more and (',' .. more) or ''
    local head = '{"model":"m","max_tokens":32,"temperature":0' .. stream .. ',"messages":['
        .. '{"role":"system","content":"You are a terse assistant used by a benchmark."},'
        .. '{"role":"user","content":"@mock:delay=' .. delay .. extra .. ' Summarise this run: '
    local tail = '"}]}'
    local pad = 300 - #head - #tail
    if pad < 0 then
        pad = 0
    end
    return head .. string.rep("x", pad) .. tail
end

-- Defining init replaces wrk's own, so the request is formatted here and served as is.
function init(args)
    local delay = tonumber(args[1]) or 0
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    wrk.body = chat_body(delay, args[2])
    req = wrk.format()
end

function request()
    return req
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "RESULT requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d "
        .. "p50_us=%d p99_us=%d max_us=%d body_bytes=%d\n",
        summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(99), latency.max, #chat_body(0)))
end
