/**
 * deploy/Dockerfile and deploy/compose.yaml, kept honest without a Docker
 * engine (this machine has none): both are parsed (dockerfile-ast, yaml) and
 * checked against the repository they describe: paths exist, the command is the
 * built broker, the environment names real broker settings, the ports match.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DockerfileParser } from 'dockerfile-ast';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { CONFIG_FILE_KEYS } from '../src/config.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const DEPLOY = join(ROOT, 'deploy');
const pkg = JSON.parse(readFileSync(join(ROOT, 'apps/broker/package.json'), 'utf8')) as {
  name: string;
  bin: Record<string, string>;
};

describe('deploy/Dockerfile', () => {
  const text = readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8');
  const df = DockerfileParser.parse(text);
  const instructions = df.getInstructions();
  const of = (kw: string) => instructions.filter((i) => i.getKeyword() === kw);

  it('parses, and every instruction is one Docker knows', () => {
    const known = [
      'FROM',
      'WORKDIR',
      'RUN',
      'COPY',
      'ENV',
      'USER',
      'EXPOSE',
      'HEALTHCHECK',
      'STOPSIGNAL',
      'CMD',
    ];
    expect(instructions.length).toBeGreaterThan(5);
    for (const i of instructions) expect(known).toContain(i.getKeyword());
  });

  it('builds on the Node major the project runs on, in two stages, and runs as an unprivileged user', () => {
    const env = readFileSync(join(ROOT, 'scripts/env.sh'), 'utf8');
    const major = /QE_NODE_SPEC:-node@(\d+)/.exec(env)![1];
    const froms = of('FROM').map((f) => f.getArgumentsContent() ?? '');
    expect(froms).toHaveLength(2);
    for (const f of froms) expect(f).toMatch(new RegExp(`^node:${major}-`));
    expect(of('USER').map((u) => u.getArgumentsContent())).toEqual(['node']);
    expect(text).toContain(`--filter=${pkg.name}...`);
    expect(text).toContain(`--filter ${pkg.name} deploy`);
  });

  it('runs the built broker, exposes its ports, and checks /health', () => {
    const cmd = of('CMD')[0]!.getArgumentsContent()!;
    const argv = JSON.parse(cmd) as string[];
    expect(argv).toEqual(['node', pkg.bin['qe-broker']!.replace(/^\.\//, '')]);
    expect(existsSync(join(ROOT, 'apps/broker/src/main.ts'))).toBe(true);
    const exposed = of('EXPOSE').flatMap((e) => (e.getArgumentsContent() ?? '').split(/\s+/));
    const envText = of('ENV')
      .map((e) => e.getArgumentsContent() ?? '')
      .join(' ');
    const port = /PORT=(\d+)/.exec(envText)![1]!;
    const gw = /HTTP_GATEWAY_PORT=(\d+)/.exec(envText)![1]!;
    expect(exposed.sort()).toEqual([port, gw].sort());
    expect(of('HEALTHCHECK')[0]!.getArgumentsContent()).toContain('/health');
    expect(of('STOPSIGNAL')[0]!.getArgumentsContent()).toBe('SIGTERM');
    // every COPY from the build context names something that exists
    const copies = of('COPY') as unknown as {
      getFlags(): { getName(): string }[];
      getArguments(): { getValue(): string }[];
    }[];
    expect(copies.filter((c) => c.getFlags().some((f) => f.getName() === 'from'))).toHaveLength(1);
    for (const c of copies) {
      if (c.getFlags().some((f) => f.getName() === 'from')) continue; // from the build stage
      const args = c.getArguments().map((a) => a.getValue());
      for (const src of args.slice(0, -1)) expect([src, existsSync(join(ROOT, src))]).toEqual([src, true]);
    }
  });
});

describe('deploy/compose.yaml', () => {
  const compose = parse(readFileSync(join(DEPLOY, 'compose.yaml'), 'utf8')) as {
    services: Record<
      string,
      {
        image?: string;
        build?: { context: string; dockerfile: string };
        environment?: Record<string, string>;
        ports?: string[];
        depends_on?: Record<string, { condition: string }>;
        healthcheck?: { test: string[] };
      }
    >;
    volumes?: Record<string, unknown>;
  };

  it('has a broker built from deploy/Dockerfile and a Redis it waits for', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['broker', 'redis']);
    const b = compose.services.broker!;
    expect(existsSync(join(DEPLOY, b.build!.context, b.build!.dockerfile))).toBe(true);
    expect(b.depends_on?.redis?.condition).toBe('service_healthy');
    expect(compose.services.redis!.healthcheck!.test).toContain('ping');
    expect(compose.services.redis!.image).toMatch(/^redis:\d/);
  });

  it('sets only real broker settings, points them at the redis service, and publishes the ports on loopback', () => {
    const env = compose.services.broker!.environment!;
    const settings = new Set<string>(Object.values(CONFIG_FILE_KEYS));
    for (const k of Object.keys(env)) expect([k, settings.has(k)]).toEqual([k, true]);
    expect(env.REDIS_URL).toBe('redis://redis:6379');
    expect(env.JWT_SECRET).toMatch(/^\$\{JWT_SECRET:\?/); // required: the broker listens beyond loopback in a container
    for (const p of compose.services.broker!.ports!) expect(p).toMatch(/^127\.0\.0\.1:\d+:\d+$/);
    expect(Object.keys(compose.volumes ?? {})).toContain('redis-data');
  });
});
