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
