/**
 * Lua scripts of the router. Every key a script touches belongs to one group
 * (`{<group>}` hash tag), so each runs on one Redis Cluster slot.
 */

/**
 * routeEvents-N: appends a publish's events to the inboxes of the members
 * they were assigned to, checking in the same step that each member is still
 * in the group. An event whose member has left (a clean stop, or reaped as
 * dead) goes to the group's pending stream instead, where a live member picks
 * it up: an inbox nobody reads never receives an event.
 *
 * KEYS[1] the group's members (zset); KEYS[2] the group's pending stream;
 * KEYS[3..] the inboxes of the members assigned events.
 * ARGV[1] publish time (epoch ms); ARGV[2 .. #KEYS-1] the member ids of
 * KEYS[3..]; then pairs: inbox number (1 = KEYS[3]), encoded event.
 * Reply: how many events went to the pending stream.
 */
export const ROUTE_EVENTS_N = `
local m = #KEYS - 2
local present = {}
for i = 1, m do present[i] = redis.call('ZSCORE', KEYS[1], ARGV[1 + i]) ~= false end
local held = 0
for j = m + 2, #ARGV, 2 do
  local i = tonumber(ARGV[j])
  if present[i] then
    redis.call('XADD', KEYS[2 + i], '*', 'e', ARGV[j + 1], 't', ARGV[1], 'a', '1')
  else
    redis.call('XADD', KEYS[2], '*', 'e', ARGV[j + 1], 't', ARGV[1], 'a', '1')
    held = held + 1
  end
end
return held
`;

/**
 * moveEntries-N: moves stream entries (of a dead or leaving member's inbox,
 * or of the group's pending stream) to members' inboxes. An entry moves only
 * if this call removed it from the source (XDEL returned 1), so members
 * moving the same entries at once move each exactly once. An entry whose
 * target has left the group in the meantime goes to the pending stream (or,
 * when the pending stream is the source, stays there).
 *
 * KEYS[1] the source stream; KEYS[2] the group's members (zset); KEYS[3] the
 * group's pending stream; KEYS[4..] target inboxes.
 * ARGV[1] the number of targets m; ARGV[2 .. m+1] their member ids; then per
 * entry 5 values: its id in KEYS[1], target number (1 = KEYS[4]; 0 = the
 * pending stream), e, t, a.
 * Reply: { entries moved to inboxes, entries moved to the pending stream }.
 */
export const MOVE_ENTRIES_N = `
local m = tonumber(ARGV[1])
local present = {}
for i = 1, m do present[i] = redis.call('ZSCORE', KEYS[2], ARGV[1 + i]) ~= false end
local moved = 0
local held = 0
for j = m + 2, #ARGV, 5 do
  local i = tonumber(ARGV[j + 1])
  local target = nil
  if i > 0 and present[i] then target = KEYS[3 + i] elseif KEYS[1] ~= KEYS[3] then target = KEYS[3] end
  if target and redis.call('XDEL', KEYS[1], ARGV[j]) == 1 then
    redis.call('XADD', target, '*', 'e', ARGV[j + 2], 't', ARGV[j + 3], 'a', ARGV[j + 4])
    if target == KEYS[3] then held = held + 1 else moved = moved + 1 end
  end
end
return { moved, held }
`;
