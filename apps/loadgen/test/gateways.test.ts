import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QEEventBus } from '@qe/core';
import { createHttpGateway, type HttpGateway } from '@qe/gateway-http';
import { createWebSocketGateway, type WebSocketGateway } from '@qe/gateway-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runScenario } from '../src/run-scenario.js';

const out = mkdtempSync(join(tmpdir(), 'qe-loadgen-gw-'));
const quiet = { print: () => {}, progress: () => {} };
let bus: QEEventBus;
let ws: WebSocketGateway;
let http: HttpGateway;

beforeAll(async () => {
  bus = new QEEventBus({ nodeId: 'loadgen-gateway-test' });
  await bus.start();
  ws = await createWebSocketGateway({ bus, port: 0, host: '127.0.0.1' });
  http = await createHttpGateway({ bus, port: 0, host: '127.0.0.1' });
});
afterAll(async () => {
  await ws.close();
  await http.close();
  await bus.stop();
  rmSync(out, { recursive: true, force: true });
});

describe('gateway targets: producer and consumer processes talk to real gateways over real sockets', () => {
  it('ws: every event published through the WebSocket gateway arrives once at a WebSocket subscriber', async () => {
    const r = await runScenario({
      scenario: 'latency',
      target: 'ws',
      brokerUrl: `http://127.0.0.1:${ws.port}`,
      params: { rate: 1000, durationMs: 500 },
      maxBatch: 50,
      outDir: out,
      ...quiet,
    });
    const p = r.runs[0]!.phases[0]!;
    expect(p.counts).toMatchObject({ sent: 500, unique: 500, lost: 0, duplicates: 0, unknown: 0 });
  });

  it('http: every event POSTed to the HTTP gateway arrives once on its SSE stream', async () => {
    const r = await runScenario({
      scenario: 'latency',
      target: 'http',
      brokerUrl: `http://127.0.0.1:${http.port}`,
      params: { rate: 500, durationMs: 500 },
      maxBatch: 50,
      outDir: out,
      ...quiet,
    });
    const p = r.runs[0]!.phases[0]!;
    expect(p.counts).toMatchObject({ sent: 250, unique: 250, lost: 0, duplicates: 0, unknown: 0 });
  });

  it('a gateway target without --broker-url fails clearly', async () => {
    await expect(
      runScenario({
        scenario: 'burst',
        target: 'ws',
        params: { rate: 100, durationMs: 100 },
        outDir: out,
        ...quiet,
      }),
    ).rejects.toThrow(/--target ws needs --broker-url/);
  });
});
