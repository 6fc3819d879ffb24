import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Broker, qe, signToken, startBroker, until } from './helpers.js';

const run = promisify(execFile);
const SECRET = 'cli-test-secret-of-at-least-32-characters!';
const ALL = { pub: { allow: ['**'] }, sub: { allow: ['**'] } };
const admin = signToken(SECRET, { ...ALL, admin: true });
const user = signToken(SECRET, ALL);
const forged = signToken('another-secret-of-at-least-32-characters!!', { ...ALL, admin: true });

// A broker on the memory transport with JWT_SECRET, and a memory alert threshold
// it is always above (16 MB): its health turns `degraded` at the first check.
let broker: Broker;
let b: string[];

beforeAll(async () => {
  broker = await startBroker({
    JWT_SECRET: SECRET,
    ALERT_MAX_MEMORY_MB: '16',
    HEALTH_CHECK_INTERVAL: '200',
    METRICS_COLLECTION_INTERVAL: '200',
  });
  b = ['--broker', broker.url, '--gateway', broker.gateway];
});

afterAll(async () => {
  await broker?.stop();
});

describe('qe against a broker with JWT_SECRET', () => {
  it('no token or a wrong one: exit 1 with the 401 hint; a non-admin on dead letters: the 403 hint', async () => {
    const [none, wrong, notAdmin, wrongHistory, noGateway] = await Promise.all([
      qe([...b, 'publish', 'cli.auth.ping']),
      qe([...b, '--token', forged, 'dlq', 'list']),
      qe([...b, 'dlq', 'list'], { env: { QE_TOKEN: user } }),
      qe([...b, '--token', forged, 'history']),
      // no --gateway, and the broker's HTTP gateway is on a random port (HTTP_GATEWAY_PORT=0)
      qe(['--broker', broker.url, '--token', user, 'history']),
    ]);
    expect(noGateway.code).toBe(1);
    expect(noGateway.stderr).toContain("picked its HTTP gateway's port at random");
    expect(noGateway.stderr).toContain('hint: pass the httpGateway URL');
    expect(none.code).toBe(1);
    expect(none.stderr).toContain('401');
    expect(none.stderr).toContain(
      'hint: the broker needs a token (JWT_SECRET is set): pass --token <jwt> or set QE_TOKEN',
    );
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/401[\s\S]*hint: the broker did not accept the token/);
    expect(wrongHistory.code).toBe(1);
    expect(wrongHistory.stderr).toContain('--token <jwt>');
    expect(notAdmin.code).toBe(1);
    expect(notAdmin.stderr).toMatch(
      /403[\s\S]*hint: dead letters are administration: the token needs "admin": true/,
    );
  });

  it('with a token: publish over WS, history over the HTTP gateway, dead letters as admin', async () => {
    const pub = await qe([...b, 'publish', 'cli.auth.ping', '{"ok":true}', '--json'], {
      env: { QE_TOKEN: user },
    });
    expect(pub.code, pub.stderr).toBe(0);
    const [hist, list] = await Promise.all([
      qe([...b, '--token', user, 'history', 'cli.auth.*', '--json']),
      qe([...b, '--token', admin, 'dlq', 'list', '--json']),
    ]);
    expect(hist.code, hist.stderr).toBe(0);
    expect(JSON.parse(hist.stdout.trim())).toMatchObject({
      id: JSON.parse(pub.stdout).ids[0],
      data: { ok: true },
    });
    expect(list.code, list.stderr).toBe(0);
    expect(JSON.parse(list.stdout)).toMatchObject({ deadLetters: [] });
  });

  it('health: degraded is exit 1, with the reason', async () => {
    await until(async () => {
      const res = await fetch(`${broker.url}/health`);
      return ((await res.json()) as { status: string }).status === 'degraded';
    }, 'the broker to report degraded');
    const [text, json] = await Promise.all([qe([...b, 'health']), qe([...b, 'health', '--json'])]);
    expect(text.code).toBe(1);
    expect(text.stdout).toMatch(/^degraded/);
    expect(text.stdout).toMatch(/memory|rss/i);
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({ status: 'degraded' });
  });

  it('stats: the live view in a terminal (tmux) shows rates, latency, lag and breakers, and q quits', async () => {
    // a tmux server of our own, on a socket in a temporary directory removed afterwards
    const dir = mkdtempSync(join(tmpdir(), 'qe-cli-tmux-'));
    const session = 'stats';
    const tmux = (...args: string[]) =>
      run('tmux', ['-S', join(dir, 'socket'), ...args], { timeout: 15_000 });
    const qeBin = fileURLToPath(new URL('../bin/qe.js', import.meta.url));
    const cmd = `${process.execPath} ${qeBin} --broker ${broker.url} stats --interval 250`;
    await tmux('new-session', '-d', '-s', session, '-x', '120', '-y', '40', cmd);
    try {
      const pub = await qe([...b, '--token', user, 'publish'], {
        input: [1, 2, 3, 4, 5].map((n) => JSON.stringify({ type: 'cli.stats.tick', data: { n } })).join('\n'),
      });
      expect(pub.code, pub.stderr).toBe(0);
      const screen = await until(
        async () => {
          const { stdout } = await tmux('capture-pane', '-p', '-t', session);
          const m = /total published ([\d,]+)/.exec(stdout);
          return m && Number(m[1]!.replace(/,/g, '')) >= 5 && stdout;
        },
        'a screen with the 5 events counted',
        40_000,
      );
      expect(screen).toMatch(/qe stats\s+http:\/\/127\.0\.0\.1:\d+/);
      expect(screen).toMatch(/published\/s\s+[\d.,]+\s+handled\/s\s+[\d.,]+/);
      expect(screen).toMatch(/p50 [\d.-]+\s+p90 [\d.-]+\s+p99 [\d.-]+/);
      expect(screen).toContain('LAG');
      expect(screen).toContain('BREAKERS');
      expect(screen).toContain('degraded');
      expect(screen).toContain('q to quit');
      await tmux('send-keys', '-t', session, 'q');
      await until(async () => {
        try {
          await tmux('has-session', '-t', session);
          return false;
        } catch {
          return true; // the session ended: qe stats quit on q
        }
      }, 'qe stats to quit on q');
    } finally {
      await tmux('kill-server').catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
