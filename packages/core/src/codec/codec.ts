import { brotliCompressSync, brotliDecompressSync, constants, gunzipSync, gzipSync } from 'node:zlib';
import { decode as mpDecode, encode as mpEncode } from '@msgpack/msgpack';
import { CodecError } from '../errors.js';
import type { AgentEvent } from '../event.js';

/**
 * Turns an event into bytes and back. Codecs are pure and stateless: safe to
 * share between buses and to call concurrently.
 */
export interface Codec {
  /** One printable ASCII character, unique per codec, written in the frame header. */
  readonly id: string;
  readonly name: string;
  encode(event: AgentEvent): Uint8Array;
  decode(bytes: Uint8Array): AgentEvent;
}

export type Compression = 'none' | 'gzip' | 'brotli';

/**
 * Every frame starts with a 4-byte printable header: `Q`, `E`, the codec id
 * and the compression (`-` none, `z` gzip, `b` brotli). A consumer decodes
 * whatever a producer chose, and a JSON frame stays readable in
 * `redis-cli XRANGE` (`QEj-{"id":...}`).
 */
export const FRAME_MAGIC_0 = 0x51; // Q
export const FRAME_MAGIC_1 = 0x45; // E
const COMPRESSION_CHAR: Record<Compression, number> = { none: 0x2d, gzip: 0x7a, brotli: 0x62 };
const JSON_ID = 0x6a; // 'j', jsonCodec.id

export const jsonCodec: Codec = {
  id: 'j',
  name: 'json',
  encode(event) {
    return Buffer.from(JSON.stringify(event), 'utf8');
  },
  decode(bytes) {
    return JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  },
};

export const msgpackCodec: Codec = {
  id: 'm',
  name: 'msgpack',
  encode(event) {
    return mpEncode(event, { ignoreUndefined: true });
  },
  decode(bytes) {
    return mpDecode(bytes) as AgentEvent;
  },
};

export interface SerializerOptions {
  /** Default `jsonCodec`. */
  codec?: Codec;
  /** Default `none`. */
  compression?: Compression;
  /** Compress only bodies at least this large (bytes). Default 1024. */
  compressAbove?: number;
  /** Extra codecs this serializer can decode (JSON and MessagePack always can). */
  codecs?: readonly Codec[];
}

/** Spec 000's `serialization` setting. `compressed` = MessagePack, gzip above 1 KiB. */
export type SerializationName = 'json' | 'msgpack' | 'compressed';

/**
 * Encodes with one chosen codec and compression; decodes any registered codec
 * and any compression, so producers and consumers with different settings
 * interoperate.
 */
export class Serializer {
  readonly codec: Codec;
  readonly compression: Compression;
  readonly compressAbove: number;
  private readonly byId = new Map<number, Codec>();
  private readonly header: Buffer;
  /** 'j' is the built-in JSON codec (not a same-named replacement), so its frames take the fast path. */
  private readonly jsonFast: boolean;

  constructor(options: SerializerOptions = {}) {
    this.codec = options.codec ?? jsonCodec;
    this.compression = options.compression ?? 'none';
    this.compressAbove = options.compressAbove ?? 1024;
    for (const c of [jsonCodec, msgpackCodec, ...(options.codecs ?? []), this.codec]) this.register(c);
    this.jsonFast = this.byId.get(JSON_ID) === jsonCodec;
    this.header = Buffer.from([FRAME_MAGIC_0, FRAME_MAGIC_1, this.codec.id.charCodeAt(0), 0x2d]);
  }

  private register(c: Codec): void {
    if (c.id.length !== 1 || c.id.charCodeAt(0) < 0x21 || c.id.charCodeAt(0) > 0x7e)
      throw new CodecError(`codec ${c.name}: id must be one printable ASCII character`);
    const prev = this.byId.get(c.id.charCodeAt(0));
    if (prev && prev !== c && prev.name !== c.name)
      throw new CodecError(`codec id '${c.id}' is used by both ${prev.name} and ${c.name}`);
    this.byId.set(c.id.charCodeAt(0), c);
  }

  /** Event to frame (header + body). Throws `CodecError` if the event cannot be encoded. */
  encode(event: AgentEvent): Buffer {
    let body: Uint8Array;
    try {
      body = this.codec.encode(event);
    } catch (err) {
      throw new CodecError(
        `cannot encode event ${event.id} with ${this.codec.name}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    if (this.compression !== 'none' && body.byteLength >= this.compressAbove) {
      const packed =
        this.compression === 'gzip'
          ? gzipSync(body, { level: 1 })
          : brotliCompressSync(body, { params: { [constants.BROTLI_PARAM_QUALITY]: 4 } });
      const head = Buffer.from(this.header);
      head[3] = COMPRESSION_CHAR[this.compression];
      return Buffer.concat([head, packed]);
    }
    return Buffer.concat([this.header, body]);
  }

  /**
   * Like `encode`, but an uncompressed JSON frame comes back as a string
   * (`QEj-{...}`), which clients such as ioredis write to the socket without an
   * intermediate Buffer and copy. Same bytes on the wire.
   */
  encodeWire(event: AgentEvent): Buffer | string {
    if (this.codec !== jsonCodec || this.compression !== 'none') return this.encode(event);
    try {
      return `QEj-${JSON.stringify(event)}`;
    } catch (err) {
      throw new CodecError(`cannot encode event ${event.id} with json: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  /** Frame to event. A frame with no header that starts with `{` is read as plain JSON. */
  decode(frame: Uint8Array | string): AgentEvent {
    const bytes = typeof frame === 'string' ? Buffer.from(frame, 'utf8') : frame;
    if (bytes.byteLength >= 4 && bytes[0] === FRAME_MAGIC_0 && bytes[1] === FRAME_MAGIC_1) {
      // the common frame, uncompressed JSON from a Buffer: parse straight from the bytes, no views
      if (
        this.jsonFast &&
        bytes[2] === JSON_ID &&
        bytes[3] === COMPRESSION_CHAR.none &&
        bytes instanceof Buffer
      ) {
        try {
          return JSON.parse(bytes.toString('utf8', 4));
        } catch (err) {
          throw new CodecError(`cannot decode json frame: ${(err as Error).message}`, { cause: err });
        }
      }
      const codec = this.byId.get(bytes[2]!);
      if (!codec)
        throw new CodecError(`unknown codec id '${String.fromCharCode(bytes[2]!)}' in frame header`);
      let body = bytes.subarray(4);
      const comp = bytes[3];
      try {
        if (comp === COMPRESSION_CHAR.gzip) body = gunzipSync(body);
        else if (comp === COMPRESSION_CHAR.brotli) body = brotliDecompressSync(body);
        else if (comp !== COMPRESSION_CHAR.none)
          throw new CodecError(`unknown compression '${String.fromCharCode(comp!)}' in frame header`);
        return codec.decode(body);
      } catch (err) {
        if (err instanceof CodecError) throw err;
        throw new CodecError(`cannot decode ${codec.name} frame: ${(err as Error).message}`, { cause: err });
      }
    }
    if (bytes.byteLength > 0 && bytes[0] === 0x7b) {
      try {
        return jsonCodec.decode(bytes);
      } catch (err) {
        throw new CodecError(`cannot decode headerless JSON frame: ${(err as Error).message}`, {
          cause: err,
        });
      }
    }
    throw new CodecError('not a QE frame (missing "QE" header)');
  }
}

/** The serializer for spec 000's `serialization` setting, or for explicit options. */
export function createSerializer(setting: SerializationName | SerializerOptions = 'json'): Serializer {
  if (typeof setting === 'object') return new Serializer(setting);
  switch (setting) {
    case 'json':
      return new Serializer({ codec: jsonCodec });
    case 'msgpack':
      return new Serializer({ codec: msgpackCodec });
    case 'compressed':
      return new Serializer({ codec: msgpackCodec, compression: 'gzip', compressAbove: 1024 });
    default:
      throw new CodecError(
        `unknown serialization ${JSON.stringify(setting)}: use json, msgpack or compressed`,
      );
  }
}
