/**
 * Lua scripts, named with their key count (BullMQ's convention). Each header
 * documents KEYS, ARGV and the reply. Atomic steps live here, not in round
 * trips.
 */

/**
 * deadLetter-2: moves one stream entry to the dead-letter stream and
 * acknowledges it, atomically.
 *
 * KEYS[1] the event stream; KEYS[2] the dead-letter stream (same hash slot)
 * ARGV[1] consumer group; ARGV[2] entry id; ARGV[3] the original frame, untouched;
 * ARGV[4] dead-letter info (JSON); ARGV[5] approximate MAXLEN of the dead-letter stream
 * Reply: the id of the new dead-letter entry.
 */
export const DEAD_LETTER_2 = `
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*',
  'e', ARGV[3], 'i', ARGV[4], 'src', KEYS[1], 'sid', ARGV[2])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return id
`;

/**
 * redrive-2: re-publishes one dead letter to an event stream and deletes the
 * dead letter, atomically, so a redrive is never lost nor doubled.
 *
 * KEYS[1] the dead-letter stream; KEYS[2] the event stream (same hash slot)
 * ARGV[1] dead-letter id; ARGV[2] the frame to publish; ARGV[3] publish time (ms);
 * ARGV[4] approximate MAXLEN of the event stream
 * Reply: the new entry id, or false when the dead letter no longer exists.
 */
export const REDRIVE_2 = `
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return false end
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'e', ARGV[2], 't', ARGV[3])
`;

/**
 * Length of the header in front of the frame in a member of the delayed set:
 * one digit for the priority level, 16 hex digits of a random id (so two
 * identical events scheduled at once stay two members) and a `:`.
 */
export const DELAYED_HEADER_LEN = 18;

/**
 * schedule-2: stores a delayed retry in the partition's delayed set, scored by
 * its due time on Redis's clock (so publishers' clocks never matter). For a
 * delivery handed back (`nack(delay)`), it also acknowledges the original
 * entry in the same step, so the retry is never both pending and scheduled,
 * and schedules nothing when that entry is no longer pending (someone else
 * settled it).
 *
 * KEYS[1] the delayed set; KEYS[2] the event stream of the original entry (same hash slot)
 * ARGV[1] delay (ms); ARGV[2] the member (header + frame); ARGV[3] consumer group,
 * or '' when there is no entry to acknowledge; ARGV[4] entry id
 * Reply: the due time (epoch ms), or 0 when the entry was not pending.
 */
export const SCHEDULE_2 = `
if ARGV[3] ~= '' and redis.call('XACK', KEYS[2], ARGV[3], ARGV[4]) == 0 then return 0 end
local now = redis.call('TIME')
local due = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], due, ARGV[2])
return due
`;

/**
 * promote-6: moves delayed retries that are due into the event streams, each
 * to the stream of its priority with the frame in 'e' and the time in 't' (as
 * a publish does), and removes them from the delayed set. One script, so any
 * number of processes can run the promoter: each member is published once.
 *
 * KEYS[1] the delayed set; KEYS[2]..KEYS[6] the event streams of priority 0..4 (same hash slot)
 * ARGV[1] most members to move; ARGV[2] approximate MAXLEN of the event streams
 * Reply: how many members were moved.
 */
export const PROMOTE_6 = `
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local t = now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000))
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms, 'LIMIT', 0, tonumber(ARGV[1]))
for _, m in ipairs(due) do
  local level = tonumber(string.sub(m, 1, 1)) or 2
  if level < 0 or level > 4 then level = 2 end
  redis.call('XADD', KEYS[2 + level], 'MAXLEN', '~', ARGV[2], '*',
    'e', string.sub(m, ${DELAYED_HEADER_LEN} + 1), 't', t)
  redis.call('ZREM', KEYS[1], m)
end
return #due
`;
