/**
 * Repro of the one bus defect the chaos suite found: a connection reset while
 * publishes are in flight stores some events twice. ioredis writes again, on
 * the new connection, every command it had written and not seen answered;
 * the Streams transport sends only WAIT at most once, not its publish script,
 * so a script Redis had already run runs again. The publisher sees one
 * acknowledgement, the stream holds two entries with the same event id.
 *
 *   pnpm --filter @qe/chaos exec tsx --conditions=@qe/source src/repro/publish-resend.ts
 *
 * Prints the events acknowledged and how many of them the stream holds twice
 * (0 when fixed). Redis on 18690 with no persistence, behind a TCP proxy cut
 * 2 ms into each of ten bursts of 300 publishes; everything it starts is
 * stopped by PID.
 */
import { QEEventBus } from '@qe/core';
import { RedisStreamsTransport } from '@qe/redis-transport';
import { startProxy, startRedis } from '@qe/test-utils';
import { Redis } from 'ioredis';

const server = await startRedis(18690, ['--appendonly', 'no']);
const proxy = await startProxy(server.port);
const admin = new Redis({ port: server.port });
const bus = new QEEventBus({
  nodeId: 'resend-repro',
  transport: new RedisStreamsTransport({ url: `redis://127.0.0.1:${proxy.port}`, keyPrefix: 'resend' }),
  freezeEvents: false,
});
bus.on('error', () => {});
try {
  await bus.start();
  let acked = 0;
  const sends: Promise<unknown>[] = [];
  // ten bursts of 300 publishes; each burst's connection is cut once Redis has run some of its scripts
  for (let round = 0; round < 10; round++) {
    for (let i = 0; i < 300; i++)
      sends.push(
        bus.publish({ type: 'resend.x', agentId: 'a', data: { i: round * 300 + i } }).then(() => acked++),
      );
    await new Promise((r) => setTimeout(r, 2));
    proxy.cut();
    await Promise.allSettled(sends);
  }
  await Promise.allSettled(sends);
  const copies = new Map<string, number>();
  for (const key of await admin.keys('resend*')) {
    if ((await admin.type(key)) !== 'stream') continue;
    for (const [, fields] of (await admin.xrange(key, '-', '+')) as [string, string[]][]) {
      const frame = fields[fields.indexOf('e') + 1] ?? '';
      const id = /"id":"([^"]+)"/.exec(frame)?.[1] ?? '?';
      copies.set(id, (copies.get(id) ?? 0) + 1);
    }
  }
  const twice = [...copies.values()].filter((n) => n > 1).length;
  console.log(`acknowledged ${acked} of 3000; stored twice: ${twice} events (${copies.size} distinct ids)`);
  process.exitCode = twice > 0 ? 1 : 0;
} finally {
  admin.disconnect();
  await bus.stop();
  await proxy.close();
  await server.stop();
  server.cleanup();
}
