-- Library, prepended (`--! use queue_failed_entry`) to every script that
-- writes or reads `retools:failed` entries, so entries written in Lua keep
-- arbitrary payload bytes exactly as FailedJob::to_json does:
--   failed_entry(payload, queue, worker, error, at) returns the entry's JSON
--     (with `payload_base64` beside a readable copy when the payload is not
--     valid UTF-8);
--   entry_payload(decoded) returns the exact payload bytes of a decoded
--     entry, or nil.
--
-- KEYS, ARGV: none of its own (it only defines local functions).
-- Returns  nothing.
local b64chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local function utf8_ok(s)
  if not string.find(s, '[\128-\255]') then return true end
  local i, n = 1, #s
  while i <= n do
    local c = string.byte(s, i)
    if c < 128 then
      i = i + 1
    else
      local len, min
      if c >= 194 and c <= 223 then len, min = 2, 128
      elseif c >= 224 and c <= 239 then len, min = 3, 2048
      elseif c >= 240 and c <= 244 then len, min = 4, 65536
      else return false end
      if i + len - 1 > n then return false end
      local cp = c % (2 ^ (7 - len))
      for k = 1, len - 1 do
        local b = string.byte(s, i + k)
        if b < 128 or b > 191 then return false end
        cp = cp * 64 + (b - 128)
      end
      if cp < min or cp > 1114111 or (cp >= 55296 and cp <= 57343) then return false end
      i = i + len
    end
  end
  return true
end
local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = string.byte(s, i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local q = {}
    for k = 1, 4 do
      local d = math.floor(n / 2 ^ (6 * (4 - k))) % 64
      q[k] = string.sub(b64chars, d + 1, d + 1)
    end
    if not b then q[3] = '=' end
    if not c then q[4] = '=' end
    out[#out + 1] = table.concat(q)
  end
  return table.concat(out)
end
local function unb64(s)
  if #s % 4 ~= 0 then return nil end
  local pad = 0
  if string.sub(s, -2) == '==' then pad = 2 elseif string.sub(s, -1) == '=' then pad = 1 end
  s = string.sub(s, 1, #s - pad)
  local map = {}
  for i = 1, 64 do map[string.byte(b64chars, i)] = i - 1 end
  local out = {}
  for i = 1, #s, 4 do
    local n, k = 0, 0
    for j = i, math.min(i + 3, #s) do
      local v = map[string.byte(s, j)]
      if not v then return nil end
      n = n * 64 + v
      k = k + 1
    end
    if k == 4 then
      out[#out + 1] = string.char(math.floor(n / 65536), math.floor(n / 256) % 256, n % 256)
    elseif k == 3 then
      n = n * 64
      out[#out + 1] = string.char(math.floor(n / 65536), math.floor(n / 256) % 256)
    elseif k == 2 then
      n = n * 4096
      out[#out + 1] = string.char(math.floor(n / 65536))
    else
      return nil
    end
  end
  return table.concat(out)
end
local function failed_entry(payload, queue, worker, err, at)
  local e = {payload = payload, queue = queue, worker = worker, error = err, failed_at = at}
  if not utf8_ok(payload) then
    e.payload = (string.gsub(payload, '[\128-\255]', '?'))
    e.payload_base64 = b64(payload)
  end
  if not utf8_ok(queue) then e.queue = (string.gsub(queue, '[\128-\255]', '?')) end
  if not utf8_ok(err) then e.error = (string.gsub(err, '[\128-\255]', '?')) end
  return cjson.encode(e)
end
local function entry_payload(f)
  if type(f.payload_base64) == 'string' then return unb64(f.payload_base64) end
  if type(f.payload) == 'string' then return f.payload end
  return nil
end
