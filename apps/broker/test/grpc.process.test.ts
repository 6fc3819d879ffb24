import type { AgentEvent } from '@qe/core';
import { createGrpcClient } from '@qe/gateway-grpc/client';
import { waitFor } from '@qe/test-utils';
import { afterEach, describe, expect, it } from 'vitest';
import { PROCESS_TEST_TIMEOUT_MS, type SpawnedBroker, startBroker } from './spawn-broker.js';

const running: SpawnedBroker[] = [];
const clients: { close(): void }[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const b of running.splice(0)) {
    if (b.child.exitCode === null && b.child.signalCode === null) {
      b.child.kill('SIGKILL');
      await b.exited;
    }
  }
});

describe('broker process with GRPC_GATEWAY_PORT', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  it('serves the gRPC gateway: a client subscribes, publishes and receives; SIGTERM ends the stream with UNAVAILABLE', async () => {
    const b = await startBroker({ GRPC_GATEWAY_PORT: '0' });
    running.push(b);
    const address = b.logs.find((l) => l.msg === 'broker listening')?.grpcGateway;
    expect(address).toMatch(/^127\.0\.0\.1:\d+$/);
    const client = createGrpcClient({ url: `grpc://${address}` });
    clients.push(client);
    expect(await client.health()).toBe('SERVING');
    const got: AgentEvent[] = [];
    const sub = client.subscribe('task.*', (e) => void got.push(e));
    await sub.ready;
    const id = await client.publish({ type: 'task.create', agentId: 'grpc-client', data: { n: 1 } });
    await waitFor(() => got.length === 1, 'the event back over gRPC');
    expect(got[0]).toMatchObject({ id, type: 'task.create', agentId: 'grpc-client', data: { n: 1 } });
    expect(await client.history({ pattern: 'task.*' })).toEqual([expect.objectContaining({ id })]);
    b.child.kill('SIGTERM');
    await expect(sub.done).rejects.toMatchObject({ grpcCode: 14 /* UNAVAILABLE */ });
    expect(await b.exited).toBe(0);
  });

  it('starts no gRPC gateway when GRPC_GATEWAY_PORT is unset', async () => {
    const b = await startBroker();
    running.push(b);
    expect(b.logs.find((l) => l.msg === 'broker listening')?.grpcGateway).toBeUndefined();
  });
});
