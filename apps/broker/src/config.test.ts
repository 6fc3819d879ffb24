import { describe, expect, it } from 'vitest';
import { BrokerConfigError, loadBrokerConfig } from './config.js';

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(BrokerConfigError);
    expect((err as BrokerConfigError).code).toBe('CONFIG');
    return (err as BrokerConfigError).problems;
  }
  throw new Error('expected a BrokerConfigError');
}

describe('loadBrokerConfig', () => {
  it('serves gRPC only when GRPC_GATEWAY_PORT is set, and refuses a bad port', () => {
    expect(loadBrokerConfig({ env: {} }).grpcGateway).toBeUndefined();
    expect(loadBrokerConfig({ env: { GRPC_GATEWAY_PORT: '50051' } }).grpcGateway).toEqual({ port: 50051 });
    expect(loadBrokerConfig({ env: { GRPC_GATEWAY_PORT: '0' } }).grpcGateway).toEqual({ port: 0 });
    for (const bad of ['70000', '-1', 'grpc', '1.5'])
      expect(problems(() => loadBrokerConfig({ env: { GRPC_GATEWAY_PORT: bad } }))).toEqual([
        expect.stringMatching(/^GRPC_GATEWAY_PORT=.*: must be an integer from 0 to 65535/),
      ]);
  });

  it('reads EVENTBUS_CLAIM_IDLE and WS_ACK_TIMEOUT (ms), defaults 30 s, and refuses values out of range', () => {
    const d = loadBrokerConfig({ env: {} });
    expect(d.claimIdleMs).toBe(30_000);
    expect(d.ws.ackTimeoutMs).toBe(30_000);
    const c = loadBrokerConfig({ env: { EVENTBUS_CLAIM_IDLE: '2000', WS_ACK_TIMEOUT: '3000' } });
    expect(c.claimIdleMs).toBe(2000);
    expect(c.ws.ackTimeoutMs).toBe(3000);
    expect(
      loadBrokerConfig({
        env: {},
        argv: ['--config', 'c.json'],
        readFile: () => '{"claimIdle":500,"wsAckTimeout":700}',
      }),
    ).toMatchObject({ claimIdleMs: 500, ws: { ackTimeoutMs: 700 } });
    for (const bad of ['99', '0', '2s', '1.5', '3600001'])
      expect(
        problems(() => loadBrokerConfig({ env: { EVENTBUS_CLAIM_IDLE: bad, WS_ACK_TIMEOUT: bad } })),
      ).toEqual([
        expect.stringMatching(/^EVENTBUS_CLAIM_IDLE=.*: must be an integer from 100 to 3600000 \(ms\)$/),
        expect.stringMatching(/^WS_ACK_TIMEOUT=.*: must be an integer from 100 to 3600000 \(ms\)$/),
      ]);
  });

  it('defaults to the in-memory transport on port 3000', () => {
    const c = loadBrokerConfig({ env: {} });
    expect(c.redis).toBeNull();
    expect(c.port).toBe(3000);
    expect(c.host).toBe('127.0.0.1');
    expect(c.allowInsecureRemote).toBe(false);
    expect(c.keyPrefix).toBe('qe:eventbus');
    expect(c.monitoringEnabled).toBe(true);
    expect(c.shutdownTimeoutMs).toBe(10_000);
  });

  it("reads spec 003's variables", () => {
    const c = loadBrokerConfig({
      env: {
        REDIS_HOST: 'redis.local',
        REDIS_PORT: '6380',
        REDIS_PASSWORD: 's3cret',
        REDIS_DB: '2',
        EVENTBUS_KEY_PREFIX: 'ossa:eventbus',
        EVENTBUS_BATCH_SIZE: '250',
        EVENTBUS_BATCH_TIMEOUT: '500',
        MONITORING_ENABLED: 'false',
        METRICS_COLLECTION_INTERVAL: '10000',
        HEALTH_CHECK_INTERVAL: '30000',
        SERVICE_NAME: 'ossa-event-bus',
      },
    });
    expect(c.redis).toEqual({
      mode: 'single',
      host: 'redis.local',
      port: 6380,
      password: 's3cret',
      db: 2,
      tls: false,
    });
    expect(c).toMatchObject({
      keyPrefix: 'ossa:eventbus',
      batchSize: 250,
      batchTimeoutMs: 500,
      monitoringEnabled: false,
      metricsIntervalMs: 10_000,
      healthCheckIntervalMs: 30_000,
      serviceName: 'ossa-event-bus',
    });
  });

  it('reads REDIS_URL (password, db, rediss) and REDIS_CLUSTER_NODES', () => {
    expect(loadBrokerConfig({ env: { REDIS_URL: 'rediss://:p%40ss@cache:6390/3' } }).redis).toEqual({
      mode: 'single',
      host: 'cache',
      port: 6390,
      db: 3,
      tls: true,
      password: 'p@ss',
    });
    expect(loadBrokerConfig({ env: { REDIS_URL: 'redis://localhost' } }).redis).toMatchObject({
      port: 6379,
      db: 0,
    });
    expect(loadBrokerConfig({ env: { REDIS_CLUSTER_NODES: 'r1:7000, r2:7001,[::1]:7002' } }).redis).toEqual({
      mode: 'cluster',
      nodes: [
        { host: 'r1', port: 7000 },
        { host: 'r2', port: 7001 },
        { host: '::1', port: 7002 },
      ],
      tls: false,
    });
  });

  it('merges a JSON config file under the environment', () => {
    const file = JSON.stringify({ port: 4000, redisClusterNodes: ['a:1', 'b:2'], monitoringEnabled: false });
    const c = loadBrokerConfig({ env: { PORT: '5000' }, argv: ['--config', 'x.json'], readFile: () => file });
    expect(c.port).toBe(5000);
    expect(c.monitoringEnabled).toBe(false);
    expect(c.redis).toMatchObject({
      mode: 'cluster',
      nodes: [
        { host: 'a', port: 1 },
        { host: 'b', port: 2 },
      ],
    });
  });

  it('names unknown file keys and lists the accepted ones', () => {
    const p = problems(() =>
      loadBrokerConfig({ env: {}, argv: ['--config=c.json'], readFile: () => '{"prot": 1}' }),
    );
    expect(p[0]).toMatch(
      /^prot \(in c.json\): unknown setting \(accepted: serviceName, nodeId, host, allowInsecureRemote, port,/,
    );
  });

  it('rejects contradictory and orphan Redis settings', () => {
    expect(
      problems(() => loadBrokerConfig({ env: { REDIS_URL: 'redis://a', REDIS_CLUSTER_NODES: 'b:1' } }))[0],
    ).toMatch(/REDIS_URL: cannot be combined with REDIS_CLUSTER_NODES/);
    expect(problems(() => loadBrokerConfig({ env: { REDIS_PASSWORD: 'x' } }))[0]).toMatch(
      /REDIS_PASSWORD: set without a Redis server/,
    );
    expect(
      problems(() => loadBrokerConfig({ env: { REDIS_CLUSTER_NODES: 'a:1', REDIS_DB: '3' } }))[0],
    ).toMatch(/REDIS_DB: Redis Cluster only has database 0/);
    expect(problems(() => loadBrokerConfig({ env: { REDIS_URL: 'redis://h/99' } }))[0]).toMatch(
      /database "99" in the path must be an integer from 0 to 15/,
    );
  });

  it('never echoes a password from a bad URL', () => {
    const p = problems(() => loadBrokerConfig({ env: { REDIS_URL: 'ftp://user:hunter2@h' } }));
    expect(p.join('\n')).not.toContain('hunter2');
  });

  it('rejects a file that is not a JSON object, and bad value types', () => {
    expect(
      problems(() => loadBrokerConfig({ env: {}, argv: ['-c', 'f'], readFile: () => '[1]' }))[0],
    ).toMatch(/must hold a JSON object/);
    expect(
      problems(() =>
        loadBrokerConfig({ env: {}, argv: ['-c', 'f'], readFile: () => '{"port": {"a":1}}' }),
      )[0],
    ).toMatch(/port \(in f\): must be a string, number, boolean or array of strings/);
    expect(
      problems(() => loadBrokerConfig({ env: {}, argv: ['-c', 'f'], readFile: () => '{"port": 1.5}' }))[0],
    ).toMatch(/port \(in f\)=1.5: must be an integer from 0 to 65535/);
    expect(problems(() => loadBrokerConfig({ env: {}, argv: ['--config'] }))[0]).toMatch(
      /--config: needs a path/,
    );
  });

  it('reads the WebSocket gateway settings and masks the JWT secret in the redacted view', async () => {
    const { redactConfig } = await import('./config.js');
    const c = loadBrokerConfig({
      env: {
        WS_PATH: '/bus',
        WS_ALLOWED_ORIGINS: 'https://a.example, http://localhost:5173',
        JWT_SECRET: 'x'.repeat(32),
      },
    });
    expect(c.ws).toMatchObject({
      enabled: true,
      path: '/bus',
      allowedOrigins: ['https://a.example', 'http://localhost:5173'],
    });
    expect(JSON.stringify(redactConfig(c))).not.toContain('x'.repeat(32));
    expect(problems(() => loadBrokerConfig({ env: { JWT_SECRET: 'short' } }))[0]).toMatch(
      /JWT_SECRET: too short/,
    );
    expect(problems(() => loadBrokerConfig({ env: { WS_ALLOWED_ORIGINS: '*' } }))[0]).toMatch(
      /WS_ALLOWED_ORIGINS: bad origin "\*"/,
    );
    expect(problems(() => loadBrokerConfig({ env: { WS_PATH: 'events' } }))[0]).toMatch(
      /WS_PATH="events": must be a URL path/,
    );
  });
});
