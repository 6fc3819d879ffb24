import { describe, expect, it } from 'vitest';
import { CodecError } from '../errors.js';
import type { AgentEvent } from '../event.js';
import { type Codec, createSerializer, jsonCodec, msgpackCodec, Serializer } from './codec.js';

const event: AgentEvent = {
  id: 'e1',
  type: 'task.create',
  agentId: 'a',
  timestamp: 1700000000000,
  priority: 2,
  data: { text: 'héllo ✓ 🚀', n: [1, 2.5, 0, 1e300, -42], nested: { deep: [null, true, {}] } },
  metadata: { correlationId: 'c', tags: ['x'] },
};

describe('codecs and frames', () => {
  it.each(['json', 'msgpack', 'compressed'] as const)('%s round-trips an event', (name) => {
    const s = createSerializer(name);
    expect(s.decode(s.encode(event))).toEqual(event);
  });

  it('writes a readable 4-byte header; JSON frames stay readable text', () => {
    const frame = createSerializer('json').encode(event);
    expect(frame.subarray(0, 4).toString()).toBe('QEj-');
    expect(frame.toString()).toContain('"type":"task.create"');
    expect(createSerializer('msgpack').encode(event).subarray(0, 4).toString()).toBe('QEm-');
  });

  it('any consumer decodes what any producer chose', () => {
    const producers = [
      createSerializer('json'),
      createSerializer('msgpack'),
      new Serializer({ codec: jsonCodec, compression: 'brotli', compressAbove: 0 }),
      new Serializer({ codec: msgpackCodec, compression: 'gzip', compressAbove: 0 }),
    ];
    const consumer = createSerializer('json');
    for (const p of producers) expect(consumer.decode(p.encode(event))).toEqual(event);
  });

  it('compresses only above the threshold, and a large payload shrinks', () => {
    const s = createSerializer('compressed');
    expect(s.encode(event).subarray(0, 4).toString()).toBe('QEm-');
    const big = { ...event, data: { blob: 'abc'.repeat(100_000) } };
    const frame = s.encode(big);
    expect(frame.subarray(0, 4).toString()).toBe('QEmz');
    expect(frame.length).toBeLessThan(10_000);
    expect(s.decode(frame)).toEqual(big);
  });

  it('encodeWire gives the same frame as encode, as a string for plain JSON', () => {
    const json = createSerializer('json');
    const wire = json.encodeWire(event);
    expect(typeof wire).toBe('string');
    expect(Buffer.from(wire as string)).toEqual(json.encode(event));
    expect(Buffer.isBuffer(createSerializer('msgpack').encodeWire(event))).toBe(true);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => json.encodeWire({ ...event, data: cyclic })).toThrow(CodecError);
  });

  it('decodes a JSON frame held in a slice of a larger Buffer (as Redis replies arrive)', () => {
    const s = createSerializer('json');
    const frame = s.encode(event);
    const big = Buffer.concat([Buffer.from('junk'), frame, Buffer.from('more')]);
    expect(s.decode(big.subarray(4, 4 + frame.length))).toEqual(event);
    const broken = Buffer.concat([frame.subarray(0, frame.length - 3)]);
    expect(() => s.decode(broken)).toThrow(CodecError);
  });

  it("a replacement codec named 'json' with id 'j' is used, not the built-in fast path", () => {
    const upper: Codec = {
      id: 'j',
      name: 'json',
      encode: (e) => Buffer.from(JSON.stringify({ ...e, type: e.type.toUpperCase() })),
      decode: (b) => ({ ...JSON.parse(Buffer.from(b).toString()), replaced: true }),
    };
    const s = new Serializer({ codec: upper });
    const decoded = s.decode(s.encode(event)) as AgentEvent & { replaced?: boolean };
    expect(decoded.replaced).toBe(true);
    expect(decoded.type).toBe('TASK.CREATE');
  });

  it('reads headerless JSON (plain producers) and accepts strings', () => {
    const s = createSerializer('msgpack');
    expect(s.decode(JSON.stringify(event))).toEqual(event);
  });

  it('plugs in a custom codec; a consumer without it gets a typed error', () => {
    const upper: Codec = {
      id: 'u',
      name: 'base64-json',
      encode: (e) => Buffer.from(Buffer.from(JSON.stringify(e)).toString('base64')),
      decode: (b) => JSON.parse(Buffer.from(Buffer.from(b).toString(), 'base64').toString()),
    };
    const s = new Serializer({ codec: upper });
    expect(s.decode(s.encode(event))).toEqual(event);
    expect(() => createSerializer('json').decode(s.encode(event))).toThrow(CodecError);
  });

  it.each([
    [Buffer.from('QEj-{not json'), /cannot decode json frame/],
    [Buffer.from('QEjq{}'), /unknown compression/],
    [Buffer.from('QEjz garbage'), /cannot decode/],
    [Buffer.from('hello'), /not a QE frame/],
    [Buffer.alloc(0), /not a QE frame/],
  ])('bad frame %s -> CodecError', (frame, message) => {
    expect(() => createSerializer().decode(frame)).toThrow(CodecError);
    expect(() => createSerializer().decode(frame)).toThrow(message);
  });

  it('refuses conflicting codec ids and events that cannot be encoded', () => {
    const clash: Codec = { ...jsonCodec, name: 'other' };
    expect(() => new Serializer({ codecs: [clash] })).toThrow(/used by both/);
    expect(() => new Serializer({ codec: { ...jsonCodec, id: 'ab' } })).toThrow(/one printable/);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => createSerializer().encode({ ...event, data: cyclic })).toThrow(CodecError);
    expect(() => createSerializer('yaml' as 'json')).toThrow(/unknown serialization/);
  });
});
