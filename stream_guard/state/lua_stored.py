"""The apply script's batched ops: many counters of a hash, keys written once (stored predictions,
held labels), and deletes.

Their bodies and validations, as :mod:`stream_guard.state.window_store` assembles them into the
apply script (see :class:`~stream_guard.state.ops.Op` for each op's arguments). ``i`` points at
the op letter, ``j`` at its first key index (nil for a keyless op).

``O`` stores a batch's predictions with one ``SET NX`` each and one ``HINCRBY`` per counter
(the batch's sum): a key already there (stored by an earlier batch, or twice in this one)
takes its own counts back out of the sums before they are written, so a prediction is counted
once however often it is stored.
"""

from __future__ import annotations

from stream_guard.state.ops import Op

#: Op -> its body in the apply script's write pass.
WRITE_LUA: dict[Op, str] = {
    Op.INCR_MANY: """local k = KEYS[tonumber(ARGV[i+1])]
    for f, a in string.gmatch(ARGV[i+2], '([^\\n]+)\\n([^\\n]+)') do
      if string.match(a, '^-?%d+$') then redis.call('HINCRBY', k, f, a) else redis.call('HINCRBYFLOAT', k, f, a) end
    end
    i = i + 3""",
    Op.SET_ONCE: """local k = tonumber(ARGV[i+1])
    local n = tonumber(ARGV[i+5])
    if redis.call('SET', KEYS[k], ARGV[i+2], 'EX', ARGV[i+3], 'NX') then
      local h = KEYS[tonumber(ARGV[i+4])]
      for f = i + 6, i + 5 + n do redis.call('HINCRBY', h, ARGV[f], 1) end
    end
    own_ttl[k] = 0; i = i + 6 + n""",
    Op.SET_ONCE_COUNTED: """local m, n = tonumber(ARGV[i+2]), tonumber(ARGV[i+3])
    local first = i + 4 + 3 * m
    local again = {}
    for e = i + 4, first - 1, 3 do
      local k = tonumber(ARGV[e])
      if not redis.call('SET', KEYS[k], ARGV[e+1], 'EX', ARGV[i+1], 'NX') then
        for t in string.gmatch(ARGV[e+2], '%d+') do
          t = tonumber(t); again[t] = (again[t] or 0) + 1
        end
      end
      own_ttl[k] = 0
    end
    local t = 0
    for c = first, i + 3 + n, 3 do
      t = t + 1
      local amount = tonumber(ARGV[c+2]) - (again[t] or 0)
      if amount ~= 0 then redis.call('HINCRBY', KEYS[tonumber(ARGV[c])], ARGV[c+1], amount) end
    end
    i = i + 4 + n""",
    Op.DELETE: """local k = tonumber(ARGV[i+1])
    redis.call('DEL', KEYS[k]); own_ttl[k] = 0; i = i + 2""",
    Op.DELETE_ALL: """local n = tonumber(ARGV[i+1])
    for e = i + 2, i + 1 + n, 500 do
      local names = {}
      for d = e, math.min(e + 499, i + 1 + n) do
        local k = tonumber(ARGV[d])
        names[#names + 1] = KEYS[k]; own_ttl[k] = 0
      end
      redis.call('DEL', unpack(names))
    end
    i = i + 2 + n""",
}

#: Op -> its validation, before the script's first write.
CHECK_LUA: dict[Op, str] = {
    # The fields not known yet are read with one HMGET (per 500), not one HGET each.
    Op.INCR_MANY: """if not need(j, 'hash') then return wrongtype() end
    local given, ask = {}, {}
    for f, a in string.gmatch(ARGV[i+2], '([^\\n]+)\\n([^\\n]+)') do
      given[#given + 1] = {f, a}
      if shadow[j][f] == nil then ask[#ask + 1] = f end
    end
    if not cleared[j] then
      for c = 1, #ask, 500 do
        local part = {unpack(ask, c, math.min(c + 499, #ask))}
        local got = redis.call('HMGET', KEYS[j], unpack(part))
        for x = 1, #part do if got[x] then shadow[j][part[x]] = got[x] end end
      end
    end
    for _, pair in ipairs(given) do
      local f, a = pair[1], pair[2]
      local cur = shadow[j][f]
      if string.match(a, '^-?%d+$') then
        if cur ~= nil and not is_int(cur) then return redis.error_reply('ERR hash value is not an integer') end
        local sum = tonumber(cur or 0) + tonumber(a)
        if math.abs(sum) > 9.2e18 then return redis.error_reply('ERR increment or decrement would overflow') end
        shadow[j][f] = sum
      else
        local amount = tonumber(a)
        if amount == nil or amount ~= amount then return redis.error_reply('ERR value is not a valid float') end
        if amount == math.huge or amount == -math.huge then return redis.error_reply('ERR value is NaN or Infinity') end
        if cur ~= nil and tonumber(cur) == nil then return redis.error_reply('ERR hash value is not a float') end
        shadow[j][f] = tonumber(cur or 0) + amount
      end
    end""",
    Op.SET_ONCE: """local c = tonumber(ARGV[i+4])
    if kind_of(j) == 'none' then
      if not need(c, 'hash') then return wrongtype() end
      for f = i + 6, i + 5 + tonumber(ARGV[i+5]) do
        local cur = field(c, ARGV[f])
        if cur ~= nil and not is_int(cur) then return redis.error_reply('ERR hash value is not an integer') end
        shadow[c][ARGV[f]] = tonumber(cur or 0) + 1
      end
      kinds[j] = 'string'
    end""",
    # The counters are checked as if every key were new: the sums bound what the op may add.
    Op.SET_ONCE_COUNTED: """local m, n = tonumber(ARGV[i+2]), tonumber(ARGV[i+3])
    for e = i + 4, i + 3 + 3 * m, 3 do
      local k = tonumber(ARGV[e])
      if kinds[k] == 'none' then kinds[k] = 'string' end
    end
    for c = i + 4 + 3 * m, i + 3 + n, 3 do
      local h, f = tonumber(ARGV[c]), ARGV[c+1]
      if shadow[h] == nil then shadow[h] = {} end
      if not need(h, 'hash') then return wrongtype() end
      local cur = field(h, f)
      if cur ~= nil and not is_int(cur) then return redis.error_reply('ERR hash value is not an integer') end
      shadow[h][f] = tonumber(cur or 0) + tonumber(ARGV[c+2])
    end""",
    Op.DELETE: "kinds[j] = 'none'; cleared[j] = true; shadow[j] = {}",
    Op.DELETE_ALL: """for d = i + 2, i + 1 + tonumber(ARGV[i+1]) do
      local k = tonumber(ARGV[d])
      kinds[k] = 'none'; cleared[k] = true; shadow[k] = {}
    end""",
}
