/**
 * The command object the transports' busy paths (publish script, XREADGROUP,
 * XACK, XCLAIM, history and replay pages, pub/sub PUBLISH) hand to ioredis's
 * `sendCommand`, in place of ioredis's own `Command`.
 *
 * Why not `Command`: its constructor builds `resolve` and `reject` as closures
 * inside the promise's executor. Measured on Node 24 (plain script, no bus):
 * one 5 KB GET per ms through such commands keeps ~4.8 MB alive at every
 * young-generation GC, nearly every reply since the previous one, which is then
 * promoted to the old generation and paid for in multi-millisecond full GCs,
 * the latency tail. The same GETs through an object whose executor only stores
 * the resolvers and whose `resolve` is a prototype method keep ~0.3 MB, as a
 * bare socket does. The effect holds with `--jitless`, so it is not a JIT quirk
 * but how these closures and the pending promise are kept; we avoid the shape.
 *
 * It carries what ioredis reads from a command (Redis.sendCommand, the data
 * handler, reconnection, Cluster.sendCommand): `name`, `args`, `promise`,
 * `resolve`, `reject`, `toWritable`, the optional timers, and the slot of its
 * key for a Cluster. Replies arrive as Buffers from the parser; `buffers: false`
 * turns them into strings as `replyEncoding: 'utf8'` would.
 */

import type { Cluster, Command, Redis } from 'ioredis';

export type Arg = string | Buffer | number;

const EMPTY: Arg[] = [];
const PING = '*1\r\n$4\r\nPING\r\n';

/** Commands of only strings below this many argument bytes are written as one string. */
const STRING_UP_TO = 1024;
/** Byte length of each argument, reused from command to command. */
let lens = new Int32Array(64);

function writeDecimal(buf: Buffer, at: number, v: number): number {
  if (v === 0) {
    buf[at] = 0x30;
    return at + 1;
  }
  let digits = 0;
  for (let x = v; x > 0; x = Math.floor(x / 10)) digits++;
  for (let i = at + digits - 1; i >= at; i--) {
    buf[i] = 0x30 + (v % 10);
    v = Math.floor(v / 10);
  }
  return at + digits;
}

/** Redis Cluster key slot: CRC16 (XMODEM) of the key, or of its `{hash tag}`, mod 16384. */
export function keySlot(key: string | Buffer): number {
  const b = typeof key === 'string' ? Buffer.from(key) : key;
  let start = 0;
  let end = b.length;
  const open = b.indexOf(0x7b); // '{'
  if (open >= 0) {
    const close = b.indexOf(0x7d, open + 1); // '}'
    if (close > open + 1) {
      start = open + 1;
      end = close;
    }
  }
  let crc = 0;
  for (let i = start; i < end; i++) {
    crc ^= b[i]! << 8;
    for (let k = 0; k < 8; k++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc & 16383;
}

function toStrings(v: unknown): unknown {
  if (Buffer.isBuffer(v)) return v.toString();
  if (Array.isArray(v)) {
    const out = new Array(v.length);
    for (let i = 0; i < v.length; i++) out[i] = toStrings(v[i]);
    return out;
  }
  return v;
}

function settleWith(this: LeanCommand, resolve: (v: unknown) => void, reject: (e: Error) => void) {
  this.res = resolve;
  this.rej = reject;
}

export class LeanCommand {
  readonly name: string;
  args: Arg[];
  readonly promise: Promise<unknown>;
  isResolved = false;
  isTraced = false;
  inTransaction = false;
  /** The key that routes it in a Cluster (undefined: any node). */
  private readonly key: string | Buffer | undefined;
  private readonly buffers: boolean;
  /** Set by `settleWith` (a shared function, not a closure per command). */
  res!: (v: unknown) => void;
  rej!: (e: Error) => void;
  private timer: NodeJS.Timeout | undefined;
  private slot: number | null | undefined;
  /** Set once ioredis wrote it to a socket (after a reconnect it may write it again). */
  written = false;
  /** The socket ioredis last wrote it to (which connection it went out on: WAIT counts per connection). */
  writtenOn: unknown = undefined;
  /** Given up on (`cancel`): if ioredis still writes it, a PING goes out instead. */
  private cancelled = false;

  /** `name` in lower case, as ioredis's command table has it. */
  constructor(name: string, args: Arg[], key: string | Buffer | undefined, buffers: boolean) {
    this.name = name;
    this.args = args;
    this.key = key;
    this.buffers = buffers;
    this.promise = new Promise(settleWith.bind(this));
  }

  resolve(reply: unknown): void {
    if (this.isResolved) return;
    this.isResolved = true;
    this.clearTimer();
    this.args = EMPTY;
    this.res(this.buffers ? reply : toStrings(reply));
  }

  /** Replaced per command by ioredis's Cluster (MOVED/ASK retries call the original). */
  reject(err: Error): void {
    if (this.isResolved) return;
    this.isResolved = true;
    this.clearTimer();
    this.rej(err);
  }

  /**
   * The command in RESP. Small ones as a string; large ones (the publish
   * script with its frames) written straight into one Buffer: building a
   * string with `+=` and having the socket encode it copied every frame twice.
   */
  toWritable(socket?: unknown): string | Buffer {
    // ioredis expects one reply per command it writes: a cancelled one asks for a PONG
    if (this.cancelled) return PING;
    this.written = true;
    this.writtenOn = socket;
    const args = this.args;
    const n = args.length;
    if (lens.length < n) lens = new Int32Array(n * 2);
    let total = 0;
    let buffers = false;
    for (let i = 0; i < n; i++) {
      let a = args[i]!;
      if (typeof a === 'number') args[i] = a = String(a);
      const len = typeof a === 'string' ? Buffer.byteLength(a) : a.length;
      if (typeof a !== 'string') buffers = true;
      lens[i] = len;
      total += len;
    }
    if (!buffers && total < STRING_UP_TO) {
      let out = `*${n + 1}\r\n$${this.name.length}\r\n${this.name}\r\n`;
      for (let i = 0; i < n; i++) out += `$${lens[i]}\r\n${args[i] as string}\r\n`;
      return out;
    }
    // header and per-argument framing: "$<digits>\r\n" + "\r\n", at most 16 bytes each
    const buf = Buffer.allocUnsafe(total + 32 + this.name.length + n * 16);
    let o = buf.write(`*${n + 1}\r\n$${this.name.length}\r\n${this.name}\r\n`, 0, 'latin1');
    for (let i = 0; i < n; i++) {
      const a = args[i] as string | Buffer;
      buf[o++] = 0x24; // $
      o = writeDecimal(buf, o, lens[i]!);
      buf[o++] = 13;
      buf[o++] = 10;
      o += typeof a === 'string' ? buf.write(a, o, 'utf8') : a.copy(buf, o);
      buf[o++] = 13;
      buf[o++] = 10;
    }
    return buf.subarray(0, o);
  }

  /**
   * Gives up on the command: rejects it with `err` now and, if ioredis has not
   * written it yet (it waits in the offline queue for a reconnect), makes sure
   * it never is (a PING takes its place, and a resend after a reconnect is a
   * PING too). Returns true when Redis never saw it, false when it was written
   * and may still be applied.
   */
  cancel(err: Error): boolean {
    this.cancelled = true;
    const unseen = !this.written;
    this.reject(err);
    return unseen;
  }

  /** ioredis `commandTimeout`: reject if Redis has not answered in `ms`. */
  setTimeout(ms: number): void {
    if (this.timer || this.isResolved) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.reject(new Error('Command timed out'));
    }, ms);
  }

  /** ioredis `blockingTimeout`: a blocking read that outlives `ms` resolves empty, as Redis would. */
  setBlockingTimeout(ms: number): void {
    if (ms <= 0 || this.isResolved) return;
    this.clearTimer();
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.resolve(null);
    }, ms);
  }

  /** The BLOCK argument in ms, or null when the command has none. */
  extractBlockingTimeout(): number | null | undefined {
    for (let i = 0; i < this.args.length - 1; i++) {
      const a = this.args[i];
      if (typeof a === 'string' && a.toUpperCase() === 'BLOCK') {
        const ms = Number(this.args[i + 1]);
        return Number.isFinite(ms) ? ms : undefined;
      }
    }
    return null;
  }

  getSlot(): number | null {
    if (this.slot === undefined) this.slot = this.key === undefined ? null : keySlot(this.key);
    return this.slot;
  }

  getKeys(): (string | Buffer)[] {
    return this.key === undefined ? [] : [this.key];
  }

  private clearTimer() {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
  }
}

/**
 * Sends one command as a LeanCommand through ioredis's `sendCommand` (so the
 * offline queue, reconnects, timeouts and Cluster routing stay ioredis's).
 * `key` routes it in a Cluster; `buffers`: replies as Buffers, otherwise strings.
 */
export function send(
  client: Redis | Cluster,
  name: string,
  args: Arg[],
  key: string | undefined,
  buffers = false,
): Promise<unknown> {
  return dispatch(client, new LeanCommand(name, args, key, buffers));
}

/** Sends a LeanCommand the caller keeps (to `cancel` it, say); resolves with its reply. */
export function dispatch(client: Redis | Cluster, cmd: LeanCommand): Promise<unknown> {
  // ioredis takes any object with Command's shape; its typings name the class
  void client.sendCommand(cmd as unknown as Command);
  return cmd.promise;
}
