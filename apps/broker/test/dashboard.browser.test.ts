import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { registerWorker, SagaOrchestrator } from '@qe/saga';
import { SwarmNode } from '@qe/swarm';
import { chromium } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { createBroker } from '../src/broker.js';
import { loadBrokerConfig } from '../src/config.js';

const ARTIFACTS = fileURLToPath(new URL('../.test-artifacts/', import.meta.url));
const FAMILIES = [
  'agent.task.assign',
  'task.create',
  'swarm.phase.transition',
  'consensus.vote',
  'system.metrics',
];

describe('dashboard in headless Chromium', () => {
  it('shows live numbers that change while events flow', async () => {
    const broker = createBroker(
      loadBrokerConfig({
        env: {
          HOST: '127.0.0.1',
          PORT: '0',
          HTTP_GATEWAY_PORT: '0',
          SERVICE_NAME: 'dashboard-test',
          CIRCUIT_FAILURE_THRESHOLD: '5',
          SHUTDOWN_TIMEOUT: '300',
          METRICS_COLLECTION_INTERVAL: '250',
        },
      }),
    );
    await broker.start();
    const profile = mkdtempSync(join(tmpdir(), 'qe-chromium-'));
    // a fresh profile per run: playwright passes it to Chromium as --user-data-dir
    const browser = await chromium.launchPersistentContext(profile, {
      executablePath: '/usr/bin/chromium',
      viewport: { width: 1400, height: 1000 },
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--no-first-run',
        '--disable-sync',
      ],
    });
    let flowing = true;
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(m.text());
      });
      await page.goto(`${broker.url}/`);
      await page.waitForFunction(() => document.getElementById('status')?.textContent === 'healthy');
      expect(await page.textContent('#t-rate-sub')).toBe('0 handled in total');

      // events flow while the page is open: a failing consumer too, for dead letters
      const sub = broker.bus.subscribe(
        'task.fail',
        () => {
          throw new Error('simulated handler failure');
        },
        { retryAttempts: 0 },
      );
      await sub.ready;
      let n = 0;
      const pump = (async () => {
        while (flowing) {
          const batch = [];
          for (let i = 0; i < 40; i++, n++)
            batch.push({
              type: FAMILIES[n % FAMILIES.length]!,
              agentId: `agent-${n % 7}`,
              data: { n },
              priority: (n % 5) as 0,
            });
          if (n % 200 === 0) batch.push({ type: 'task.fail', agentId: 'agent-x', data: { n } });
          await broker.bus.publishBatch(batch);
          await new Promise((r) => setTimeout(r, 10));
        }
      })();

      await page.waitForFunction(
        () => Number((document.getElementById('t-rate')?.textContent ?? '0').replace(/[^0-9.]/g, '')) > 0,
      );
      const first = await page.textContent('#t-rate-sub');
      await page.waitForFunction(
        (prev) => document.getElementById('t-rate-sub')?.textContent !== prev,
        first,
      );
      const second = await page.textContent('#t-rate-sub');
      const handled = (s: string | null) => Number((s ?? '').replace(/[^0-9]/g, ''));
      expect(handled(second)).toBeGreaterThan(handled(first));

      await page.waitForFunction(() => Number(document.getElementById('t-dead')?.textContent ?? '0') > 0);
      await page.waitForFunction(() => document.querySelectorAll('#c-lat path').length === 4);
      const families = await page.$$eval('#b-family .row', (rows) =>
        rows.map((r) => r.getAttribute('data-name')),
      );
      expect(families.sort()).toEqual(['agent', 'consensus', 'swarm', 'system', 'task']);
      const priorities = await page.$$eval('#b-priority .row', (rows) =>
        rows.map((r) => r.getAttribute('data-name')),
      );
      expect(priorities).toEqual(['critical', 'high', 'normal', 'low', 'bulk']);
      expect(await page.textContent('#dead')).toContain('simulated handler failure');
      expect(await page.textContent('#lag')).toContain('bus queue');
      // the failing handler's circuit opens (threshold 5); the monitor's stays closed
      await page.waitForSelector('#circuits .state.open');
      expect(await page.textContent('#circuits')).toContain('task.fail');
      expect(Number(await page.textContent('#t-conn'))).toBeGreaterThan(0);

      // sagas (@qe/saga) on the broker's bus: one held at its second step, one completed, one compensated
      let release = () => {};
      const held = new Promise<void>((r) => {
        release = r;
      });
      await registerWorker(broker.bus, 'reserve', () => ({ reserved: true }));
      await registerWorker(broker.bus, 'release', () => ({ released: true }));
      await registerWorker(broker.bus, 'charge', async (ctx) => {
        if (ctx.context.hold) await held;
        if (ctx.context.refuse) throw new Error('card refused');
        return { charged: true };
      });
      const orchestrator = new SagaOrchestrator({ bus: broker.bus });
      orchestrator.define({
        name: 'checkout',
        steps: [
          { name: 'reserve', worker: 'reserve', compensate: 'release' },
          { name: 'charge', worker: 'charge' },
        ],
      });
      await orchestrator.start();
      const heldRun = orchestrator.execute('checkout', { hold: true });
      await page.waitForFunction(() =>
        (document.getElementById('sagas')?.textContent ?? '').includes('charge'),
      );
      expect(await page.textContent('#sagas')).toContain('checkout');
      expect((await orchestrator.execute('checkout', {})).status).toBe('completed');
      expect((await orchestrator.execute('checkout', { refuse: true })).status).toBe('compensated');
      release();
      expect((await heldRun).status).toBe('completed');
      await page.waitForFunction(() => {
        const rows = Array.from(document.querySelectorAll('#b-sagas .row'), (r) =>
          r.getAttribute('data-name'),
        );
        return rows.includes('completed') && rows.includes('compensated');
      });
      await page.waitForFunction(() =>
        (document.getElementById('sagas')?.textContent ?? '').includes('no saga running'),
      );
      await orchestrator.stop();

      // an agent swarm (@qe/swarm) on the broker's bus: agents register, tasks run
      const node = new SwarmNode({ bus: broker.bus, heartbeatIntervalMs: 200 });
      await node.start();
      for (let i = 0; i < 3; i++)
        await node.registerAgent({
          id: `coder-${i}`,
          type: 'coder',
          capabilities: ['typescript'],
          capacity: 2,
          handler: async ({ input }) => `reviewed ${String(input)}`,
        });
      const results = await Promise.all(
        Array.from({ length: 6 }, (_, i) => node.submit({ input: `file-${i}`, requires: ['typescript'] })),
      );
      expect(results.map((r) => r.result)).toContain('reviewed file-0');
      await page.waitForFunction(() =>
        Array.from(document.querySelectorAll('#pools td'), (td) => td.textContent).includes('coder'),
      );
      await page.waitForFunction(() => {
        const rows = Array.from(document.querySelectorAll('#b-tasks .row'), (r) =>
          r.getAttribute('data-name'),
        );
        return rows.includes('assigned') && rows.includes('complete');
      });
      expect(await page.textContent('#pools')).toContain('coder');

      await new Promise((r) => setTimeout(r, 2500)); // a few more samples on the charts
      mkdirSync(ARTIFACTS, { recursive: true });
      const shot = join(ARTIFACTS, 'dashboard.png');
      await page.screenshot({ path: shot, fullPage: true });
      expect(errors).toEqual([]);
      await node.stop();
      flowing = false;
      await pump;
    } finally {
      flowing = false;
      await browser.close();
      await broker.stop();
      rmSync(profile, { recursive: true, force: true });
    }
  }, 60_000);
});
