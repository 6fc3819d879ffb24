import { getRandomValues } from 'node:crypto';

const HEX: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
const POOL_SIZE = 16 * 512;
const pool = new Uint8Array(POOL_SIZE);
let poolPos = POOL_SIZE;
let lastMs = -1;
let seq = 0;

/**
 * A UUIDv7 (RFC 9562): 48-bit Unix-ms timestamp, then a 12-bit counter that
 * keeps ids from one process strictly increasing within a millisecond, then
 * 62 random bits. Ids sort by creation time, which keeps Redis and logs tidy.
 */
export function uuidv7(now: number = Date.now()): string {
  if (poolPos + 10 > POOL_SIZE) {
    getRandomValues(pool);
    poolPos = 0;
  }
  if (now > lastMs) {
    lastMs = now;
    seq = pool[poolPos]! & 0x3ff; // random start, room to count up
  } else {
    now = lastMs;
    seq++;
    if (seq > 0xfff) {
      // counter exhausted: borrow the next millisecond
      lastMs = now = lastMs + 1;
      seq = 0;
    }
  }
  const r = poolPos;
  poolPos += 10;
  const hi = Math.floor(now / 0x10000); // top 32 bits of the 48-bit timestamp
  const lo = now % 0x10000;
  return (
    HEX[(hi >>> 24) & 0xff]! +
    HEX[(hi >>> 16) & 0xff]! +
    HEX[(hi >>> 8) & 0xff]! +
    HEX[hi & 0xff]! +
    '-' +
    HEX[lo >>> 8]! +
    HEX[lo & 0xff]! +
    '-' +
    HEX[0x70 | (seq >>> 8)]! +
    HEX[seq & 0xff]! +
    '-' +
    HEX[0x80 | (pool[r]! & 0x3f)]! +
    HEX[pool[r + 1]!]! +
    '-' +
    HEX[pool[r + 2]!]! +
    HEX[pool[r + 3]!]! +
    HEX[pool[r + 4]!]! +
    HEX[pool[r + 5]!]! +
    HEX[pool[r + 6]!]! +
    HEX[pool[r + 7]!]!
  );
}
