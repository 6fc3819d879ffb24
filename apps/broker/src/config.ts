import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { ConfigError, type LogLevel } from '@qe/core';

/** Where the broker's events live. */
export type RedisSettings =
  | { mode: 'single'; host: string; port: number; password?: string; db: number; tls: boolean }
  | { mode: 'cluster'; nodes: { host: string; port: number }[]; password?: string; tls: boolean };

/** The broker's whole configuration, after defaults, file and environment were merged and validated. */
export interface BrokerConfig {
  serviceName: string;
  /** Stable node id of the broker's bus (durable consumer names derive from it). */
  nodeId: string;
  /** Default `127.0.0.1`: reachable from this machine only. */
  host: string;
  /**
   * Listening on a non-loopback address without authentication (JWT_SECRET)
   * must be asked for explicitly; it is then logged as a warning at start.
   */
  allowInsecureRemote: boolean;
  /** 0 picks a free port (tests). */
  port: number;
  /** `null`: the in-memory transport (the default). */
  redis: RedisSettings | null;
  keyPrefix: string;
  batchSize: number;
  batchTimeoutMs: number;
  /**
   * A group entry pending this long on a consumer that stopped reading it (a
   * crashed broker, a lost reply) is claimed by a live member (the Redis
   * transport's `claimIdleMs`). Default 30,000 ms.
   */
  claimIdleMs: number;
  monitoringEnabled: boolean;
  metricsIntervalMs: number;
  healthCheckIntervalMs: number;
  shutdownTimeoutMs: number;
  logLevel: LogLevel;
  /** Spec 000's circuit breaker around every handler on the broker's bus (`@qe/reliability`). */
  circuitBreaker: {
    enabled: boolean;
    failureThreshold: number;
    recoveryTimeoutMs: number;
    monitoringPeriodMs: number;
  };
  /** The WebSocket gateway (`@qe/gateway-ws`), mounted on the broker's HTTP server. */
  ws: {
    enabled: boolean;
    path: string;
    maxConnections: number;
    maxPayloadBytes: number;
    allowedOrigins: string[];
    jwtSecret?: string;
    /** How long a group delivery waits for the client's ack before the bus retries it (`ackTimeoutMs`). */
    ackTimeoutMs: number;
  };
  /** The HTTP gateway (`@qe/gateway-http`) on its own port (it serves HTTP/2 and owns its server). */
  httpGateway: {
    enabled: boolean;
    port: number;
    /** Also serve cleartext HTTP/2 (prior knowledge) on this port. */
    h2cPort?: number;
    tlsKeyFile?: string;
    tlsCertFile?: string;
  };
  /**
   * The gRPC gateway (`@qe/gateway-grpc`) on its own port; absent (the
   * default) when `GRPC_GATEWAY_PORT` is unset. Same host, tokens and message
   * limits as the WebSocket gateway.
   */
  grpcGateway?: { port: number };
  /**
   * Per-principal request and message limits of both gateways, shared through
   * Redis across broker instances when Redis is configured. 0 turns a limit off.
   */
  rateLimit: {
    windowMs: number;
    /** HTTP gateway requests per window per principal (or client address without auth). */
    httpMaxRequests: number;
    /** WebSocket messages per window per connection. */
    wsMaxMessages: number;
    /** WebSocket messages per window per principal, across its connections (and brokers). */
    wsMaxMessagesPerPrincipal: number;
  };
  /** Prometheus metric name prefix (`@qe/metrics`); `ossa_eventbus_` gives spec 003's exact names. */
  metricsPrefix: string;
  /**
   * Event contracts (`@qe/contracts`): a directory of JSON Schema contract files
   * loaded at start, checked on publish (`strict`: refused) and on consume
   * (dead-lettered). Absent: no validation beyond the envelope.
   */
  contracts?: { schemaPath: string; strict: boolean };
  /** Cross-project messaging: a JSON file with the projects (credential hashes, never secrets). */
  projectsFile?: string;
  /** Spec 003's alert thresholds: crossing one makes health `degraded` and raises a `system.alert` event. */
  alerts: {
    maxErrorRatePercent: number;
    maxLatencyMs: number;
    maxQueueDepth: number;
    maxMemoryBytes: number;
  };
}

/** Every setting problem found, each naming the setting and the values it accepts. */
export class BrokerConfigError extends ConfigError {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(
      problems.length === 1 ? 'setting' : 'settings',
      `invalid configuration:\n  - ${problems.join('\n  - ')}`,
      {
        details: { problems },
      },
    );
    this.problems = problems;
  }
}

/** The keys a `--config` JSON file may hold (camelCase), with the environment variable each mirrors. */
export const CONFIG_FILE_KEYS = {
  serviceName: 'SERVICE_NAME',
  nodeId: 'NODE_ID',
  host: 'HOST',
  allowInsecureRemote: 'ALLOW_INSECURE_REMOTE',
  port: 'PORT',
  redisUrl: 'REDIS_URL',
  redisHost: 'REDIS_HOST',
  redisPort: 'REDIS_PORT',
  redisPassword: 'REDIS_PASSWORD',
  redisDb: 'REDIS_DB',
  redisClusterNodes: 'REDIS_CLUSTER_NODES',
  keyPrefix: 'EVENTBUS_KEY_PREFIX',
  batchSize: 'EVENTBUS_BATCH_SIZE',
  batchTimeout: 'EVENTBUS_BATCH_TIMEOUT',
  claimIdle: 'EVENTBUS_CLAIM_IDLE',
  monitoringEnabled: 'MONITORING_ENABLED',
  metricsCollectionInterval: 'METRICS_COLLECTION_INTERVAL',
  healthCheckInterval: 'HEALTH_CHECK_INTERVAL',
  shutdownTimeout: 'SHUTDOWN_TIMEOUT',
  logLevel: 'LOG_LEVEL',
  circuitBreakerEnabled: 'CIRCUIT_BREAKER_ENABLED',
  circuitFailureThreshold: 'CIRCUIT_FAILURE_THRESHOLD',
  circuitRecoveryTimeout: 'CIRCUIT_RECOVERY_TIMEOUT',
  circuitMonitoringPeriod: 'CIRCUIT_MONITORING_PERIOD',
  wsEnabled: 'WS_ENABLED',
  wsPath: 'WS_PATH',
  wsMaxConnections: 'WS_MAX_CONNECTIONS',
  wsMaxPayload: 'WS_MAX_PAYLOAD',
  wsAllowedOrigins: 'WS_ALLOWED_ORIGINS',
  wsAckTimeout: 'WS_ACK_TIMEOUT',
  jwtSecret: 'JWT_SECRET',
  httpGatewayEnabled: 'HTTP_GATEWAY_ENABLED',
  httpGatewayPort: 'HTTP_GATEWAY_PORT',
  httpGatewayH2cPort: 'HTTP_GATEWAY_H2C_PORT',
  httpGatewayTlsKey: 'HTTP_GATEWAY_TLS_KEY',
  httpGatewayTlsCert: 'HTTP_GATEWAY_TLS_CERT',
  grpcGatewayPort: 'GRPC_GATEWAY_PORT',
  metricsPrefix: 'METRICS_PREFIX',
  alertMaxErrorRate: 'ALERT_MAX_ERROR_RATE',
  alertMaxLatency: 'ALERT_MAX_LATENCY',
  alertMaxQueueDepth: 'ALERT_MAX_QUEUE_DEPTH',
  alertMaxMemoryMb: 'ALERT_MAX_MEMORY_MB',
  contractsSchemaPath: 'CONTRACTS_SCHEMA_PATH',
  contractsStrict: 'CONTRACTS_STRICT',
  projectsFile: 'PROJECTS_FILE',
  rateLimitWindow: 'RATE_LIMIT_WINDOW',
  rateLimitMaxRequests: 'RATE_LIMIT_MAX_REQUESTS',
  wsRateLimitMaxMessages: 'WS_RATE_LIMIT_MAX_MESSAGES',
  wsRateLimitPerPrincipal: 'WS_RATE_LIMIT_PER_PRINCIPAL',
} as const;

type FileKey = keyof typeof CONFIG_FILE_KEYS;
type EnvName = (typeof CONFIG_FILE_KEYS)[FileKey];

/** Where `loadBrokerConfig` reads from; every field defaults to the real process. */
export interface LoadConfigInput {
  env?: Record<string, string | undefined>;
  /** Command-line arguments after the script (`--config file`). */
  argv?: readonly string[];
  /** For tests: read a file. Default `fs.readFileSync(path, 'utf8')`. */
  readFile?: (path: string) => string;
}

/** A raw setting value and where it came from, for error messages. */
interface Raw {
  value: string | number | boolean | string[];
  from: string;
}

const LOG_LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];

/**
 * Reads the configuration: defaults, then the optional `--config <file.json>`,
 * then environment variables (spec 003's names plus `REDIS_URL`,
 * `REDIS_CLUSTER_NODES`, `PORT`, `HOST`). Every value is validated; all
 * problems are reported together in one `BrokerConfigError` (code `CONFIG`),
 * each naming the setting, the bad value and the accepted values. Pure apart
 * from reading the config file.
 */
export function loadBrokerConfig(input: LoadConfigInput = {}): BrokerConfig {
  const env = input.env ?? process.env;
  const argv = input.argv ?? [];
  const problems: string[] = [];
  const raw = new Map<EnvName, Raw>();

  let configPath: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--config' || a === '-c') {
      configPath = argv[++i];
      if (configPath === undefined) problems.push('--config: needs a path to a JSON file');
    } else if (a.startsWith('--config=')) configPath = a.slice('--config='.length);
    else if (a === '--help' || a === '-h') continue;
    else problems.push(`${a}: unknown argument (accepted: --config <file.json>)`);
  }

  if (configPath !== undefined) {
    const read = input.readFile ?? ((p: string) => readFileSync(p, 'utf8'));
    let text: string | undefined;
    try {
      text = read(configPath);
    } catch (err) {
      problems.push(`--config ${configPath}: cannot read the file (${(err as Error).message})`);
    }
    if (text !== undefined) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch (err) {
        problems.push(`--config ${configPath}: not valid JSON (${(err as Error).message})`);
      }
      if (parsed !== undefined) {
        if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed))
          problems.push(`--config ${configPath}: must hold a JSON object of settings`);
        else {
          for (const [k, v] of Object.entries(parsed as Record<string, unknown>)) {
            if (!(k in CONFIG_FILE_KEYS)) {
              problems.push(
                `${k} (in ${configPath}): unknown setting (accepted: ${Object.keys(CONFIG_FILE_KEYS).join(', ')})`,
              );
              continue;
            }
            const ok =
              typeof v === 'string' ||
              typeof v === 'number' ||
              typeof v === 'boolean' ||
              (Array.isArray(v) && v.every((x) => typeof x === 'string'));
            if (!ok) {
              problems.push(`${k} (in ${configPath}): must be a string, number, boolean or array of strings`);
              continue;
            }
            raw.set(CONFIG_FILE_KEYS[k as FileKey], {
              value: v as Raw['value'],
              from: `${k} (in ${configPath})`,
            });
          }
        }
      }
    }
  }

  for (const name of Object.values(CONFIG_FILE_KEYS)) {
    const v = env[name];
    if (v !== undefined && v !== '') raw.set(name, { value: v, from: name });
  }

  const str = (name: EnvName, def: string, check?: { re: RegExp; accepted: string }): string => {
    const r = raw.get(name);
    if (!r) return def;
    const s = Array.isArray(r.value) ? r.value.join(',') : String(r.value);
    if (check && !check.re.test(s)) {
      problems.push(`${r.from}=${JSON.stringify(r.value)}: must be ${check.accepted}`);
      return def;
    }
    return s;
  };
  const int = (name: EnvName, def: number, min: number, max: number, unit = ''): number => {
    const r = raw.get(name);
    if (!r) return def;
    const n =
      typeof r.value === 'number'
        ? r.value
        : typeof r.value === 'string'
          ? Number(r.value.trim())
          : Number.NaN;
    if (
      !Number.isInteger(n) ||
      n < min ||
      n > max ||
      (typeof r.value === 'string' && r.value.trim() === '')
    ) {
      problems.push(`${r.from}=${JSON.stringify(r.value)}: must be an integer from ${min} to ${max}${unit}`);
      return def;
    }
    return n;
  };
  const bool = (name: EnvName, def: boolean): boolean => {
    const r = raw.get(name);
    if (!r) return def;
    if (typeof r.value === 'boolean') return r.value;
    const s = String(r.value).trim().toLowerCase();
    if (['true', '1', 'yes', 'on'].includes(s)) return true;
    if (['false', '0', 'no', 'off'].includes(s)) return false;
    problems.push(
      `${r.from}=${JSON.stringify(r.value)}: must be true or false (also accepted: 1/0, yes/no, on/off)`,
    );
    return def;
  };

  const serviceName = str('SERVICE_NAME', 'qe-broker', {
    re: /^[A-Za-z0-9_.:-]{1,64}$/,
    accepted: '1-64 characters of A-Z a-z 0-9 _ . : -',
  });
  const defaultNode = `${serviceName}-${hostname().replace(/[^A-Za-z0-9_.:-]/g, '-')}`.slice(0, 128);
  const nodeId = str('NODE_ID', defaultNode, {
    re: /^[A-Za-z0-9_.:-]{1,128}$/,
    accepted: '1-128 characters of A-Z a-z 0-9 _ . : -',
  });
  const host = str('HOST', '127.0.0.1', {
    re: /^[A-Za-z0-9.:[\]-]{1,255}$/,
    accepted: 'a host name or IP address to listen on (e.g. 0.0.0.0, 127.0.0.1, ::)',
  });
  const port = int('PORT', 3000, 0, 65535, ' (0 = any free port)');
  const keyPrefix = str('EVENTBUS_KEY_PREFIX', 'qe:eventbus', {
    re: /^[^\s{}]{1,128}$/,
    accepted: '1-128 characters without spaces or braces, e.g. qe:eventbus',
  });
  const batchSize = int('EVENTBUS_BATCH_SIZE', 500, 1, 10_000, ' (events)');
  const batchTimeoutMs = int('EVENTBUS_BATCH_TIMEOUT', 1000, 1, 60_000, ' (ms)');
  const claimIdleMs = int('EVENTBUS_CLAIM_IDLE', 30_000, 100, 3_600_000, ' (ms)');
  const monitoringEnabled = bool('MONITORING_ENABLED', true);
  const metricsIntervalMs = int('METRICS_COLLECTION_INTERVAL', 1000, 100, 3_600_000, ' (ms)');
  const healthCheckIntervalMs = int('HEALTH_CHECK_INTERVAL', 30_000, 100, 3_600_000, ' (ms)');
  const shutdownTimeoutMs = int('SHUTDOWN_TIMEOUT', 10_000, 0, 600_000, ' (ms)');
  const logLevelRaw = raw.get('LOG_LEVEL');
  let logLevel: LogLevel = 'info';
  if (logLevelRaw) {
    const s = String(logLevelRaw.value).toLowerCase();
    if ((LOG_LEVELS as readonly string[]).includes(s)) logLevel = s as LogLevel;
    else
      problems.push(
        `${logLevelRaw.from}=${JSON.stringify(logLevelRaw.value)}: must be one of ${LOG_LEVELS.join(', ')}`,
      );
  }

  const circuitBreaker = {
    enabled: bool('CIRCUIT_BREAKER_ENABLED', true),
    failureThreshold: int('CIRCUIT_FAILURE_THRESHOLD', 10, 1, 1_000_000, ' (failures)'),
    recoveryTimeoutMs: int('CIRCUIT_RECOVERY_TIMEOUT', 60_000, 1, 3_600_000, ' (ms)'),
    monitoringPeriodMs: int('CIRCUIT_MONITORING_PERIOD', 30_000, 1, 3_600_000, ' (ms)'),
  };
  const originsRaw = str('WS_ALLOWED_ORIGINS', '');
  const allowedOrigins =
    originsRaw === ''
      ? []
      : originsRaw
          .split(',')
          .map((o) => o.trim())
          .filter((o) => o !== '');
  for (const o of allowedOrigins)
    if (!/^https?:\/\/[^\s/]+$/.test(o))
      problems.push(
        `WS_ALLOWED_ORIGINS: bad origin ${JSON.stringify(o)} (accepted: a comma-separated list like https://app.example.com,http://localhost:5173)`,
      );
  const jwtSecret = str('JWT_SECRET', '');
  if (jwtSecret !== '' && jwtSecret.length < 32)
    problems.push('JWT_SECRET: too short (accepted: an HS256 secret of at least 32 characters)');
  const ws = {
    enabled: bool('WS_ENABLED', true),
    path: str('WS_PATH', '/events', {
      re: /^\/[A-Za-z0-9_./-]{0,127}$/,
      accepted: 'a URL path starting with / (e.g. /events)',
    }),
    maxConnections: int('WS_MAX_CONNECTIONS', 1000, 1, 1_000_000, ' (connections)'),
    maxPayloadBytes: int('WS_MAX_PAYLOAD', 1024 * 1024, 1024, 64 * 1024 * 1024, ' (bytes)'),
    allowedOrigins,
    ...(jwtSecret === '' ? {} : { jwtSecret }),
    ackTimeoutMs: int('WS_ACK_TIMEOUT', 30_000, 100, 3_600_000, ' (ms)'),
  };
  const tlsKeyFile = str('HTTP_GATEWAY_TLS_KEY', '');
  const tlsCertFile = str('HTTP_GATEWAY_TLS_CERT', '');
  if ((tlsKeyFile === '') !== (tlsCertFile === ''))
    problems.push(
      'HTTP_GATEWAY_TLS_KEY and HTTP_GATEWAY_TLS_CERT: set both (PEM files) for HTTP/2 over TLS, or neither for cleartext HTTP/1.1',
    );
  const httpGateway: BrokerConfig['httpGateway'] = {
    enabled: bool('HTTP_GATEWAY_ENABLED', true),
    port: int('HTTP_GATEWAY_PORT', 3001, 0, 65535, ' (0 = any free port)'),
    ...(tlsKeyFile === '' ? {} : { tlsKeyFile }),
    ...(tlsCertFile === '' ? {} : { tlsCertFile }),
  };
  const metricsPrefix = str('METRICS_PREFIX', 'qe_eventbus_', {
    re: /^[a-zA-Z_:][a-zA-Z0-9_:]{0,63}$/,
    accepted:
      'a Prometheus name prefix: letters, digits, _ and :, not starting with a digit (e.g. qe_eventbus_, ossa_eventbus_)',
  });
  const alerts = {
    maxErrorRatePercent: int('ALERT_MAX_ERROR_RATE', 5, 0, 100, ' (percent)'),
    maxLatencyMs: int('ALERT_MAX_LATENCY', 1000, 1, 3_600_000, ' (ms)'),
    maxQueueDepth: int('ALERT_MAX_QUEUE_DEPTH', 1000, 1, 100_000_000, ' (events)'),
    maxMemoryBytes: int('ALERT_MAX_MEMORY_MB', 512, 16, 1_048_576, ' (MB)') * 1024 * 1024,
  };
  const redis = readRedis(raw, problems);
  const schemaPath = str('CONTRACTS_SCHEMA_PATH', '');
  const contractsStrict = bool('CONTRACTS_STRICT', true);
  if (schemaPath === '' && raw.has('CONTRACTS_STRICT'))
    problems.push(
      'CONTRACTS_STRICT: set without CONTRACTS_SCHEMA_PATH (accepted: also set the schema directory)',
    );
  const projectsFile = str('PROJECTS_FILE', '');
  const allowInsecureRemote = bool('ALLOW_INSECURE_REMOTE', false);
  if (!isLoopback(host) && jwtSecret === '' && !allowInsecureRemote)
    problems.push(
      `HOST=${host}: listening beyond this machine without authentication (accepted: set JWT_SECRET, or ALLOW_INSECURE_REMOTE=true to accept an open broker, or a loopback HOST such as 127.0.0.1)`,
    );
  const grpcGateway = raw.has('GRPC_GATEWAY_PORT')
    ? { port: int('GRPC_GATEWAY_PORT', 0, 0, 65535, ' (0 = any free port; unset = no gRPC gateway)') }
    : undefined;
  const h2cRaw = raw.get('HTTP_GATEWAY_H2C_PORT');
  if (h2cRaw !== undefined)
    httpGateway.h2cPort = int('HTTP_GATEWAY_H2C_PORT', 0, 0, 65535, ' (0 = any free port)');
  const rateLimit = {
    windowMs: int('RATE_LIMIT_WINDOW', 1000, 1, 3_600_000, ' (ms)'),
    httpMaxRequests: int('RATE_LIMIT_MAX_REQUESTS', 0, 0, 100_000_000, ' (requests per window; 0 = off)'),
    wsMaxMessages: int('WS_RATE_LIMIT_MAX_MESSAGES', 0, 0, 100_000_000, ' (messages per window; 0 = off)'),
    wsMaxMessagesPerPrincipal: int(
      'WS_RATE_LIMIT_PER_PRINCIPAL',
      0,
      0,
      100_000_000,
      ' (messages per window; 0 = off)',
    ),
  };
  if (rateLimit.wsMaxMessagesPerPrincipal > 0 && rateLimit.wsMaxMessages === 0)
    problems.push(
      'WS_RATE_LIMIT_PER_PRINCIPAL: needs WS_RATE_LIMIT_MAX_MESSAGES (the per-connection limit) as well',
    );

  if (problems.length > 0) throw new BrokerConfigError(problems);
  return {
    serviceName,
    nodeId,
    host,
    allowInsecureRemote,
    port,
    redis,
    keyPrefix,
    batchSize,
    batchTimeoutMs,
    claimIdleMs,
    monitoringEnabled,
    metricsIntervalMs,
    healthCheckIntervalMs,
    shutdownTimeoutMs,
    logLevel,
    circuitBreaker,
    ws,
    httpGateway,
    ...(grpcGateway === undefined ? {} : { grpcGateway }),
    metricsPrefix,
    alerts,
    rateLimit,
    ...(schemaPath === '' ? {} : { contracts: { schemaPath, strict: contractsStrict } }),
    ...(projectsFile === '' ? {} : { projectsFile }),
  };
}

/** Is this listen address reachable from this machine only? */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

function parseHostPort(s: string): { host: string; port: number } | null {
  const m = /^\[?([A-Za-z0-9.:-]+?)\]?:(\d{1,5})$/.exec(s.trim());
  if (!m) return null;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return null;
  return { host: m[1]!, port };
}

function readRedis(raw: Map<EnvName, Raw>, problems: string[]): RedisSettings | null {
  const url = raw.get('REDIS_URL');
  const cluster = raw.get('REDIS_CLUSTER_NODES');
  const hostR = raw.get('REDIS_HOST');
  const portR = raw.get('REDIS_PORT');
  const pwR = raw.get('REDIS_PASSWORD');
  const dbR = raw.get('REDIS_DB');
  if (!url && !cluster && !hostR && !portR) {
    if (pwR || dbR)
      problems.push(
        `${(pwR ?? dbR)!.from}: set without a Redis server (accepted: also set REDIS_HOST, REDIS_URL or REDIS_CLUSTER_NODES)`,
      );
    return null;
  }
  const password = pwR === undefined ? undefined : String(pwR.value);
  let db = 0;
  if (dbR) {
    const n = Number(dbR.value);
    if (!Number.isInteger(n) || n < 0 || n > 15 || String(dbR.value).trim() === '')
      problems.push(`${dbR.from}=${JSON.stringify(dbR.value)}: must be an integer from 0 to 15`);
    else db = n;
  }
  if (cluster) {
    if (url) problems.push(`${url.from}: cannot be combined with ${cluster.from} (accepted: one of them)`);
    if (dbR && db !== 0)
      problems.push(`${dbR.from}: Redis Cluster only has database 0 (accepted: 0 or unset)`);
    const list = Array.isArray(cluster.value) ? cluster.value : String(cluster.value).split(',');
    const nodes: { host: string; port: number }[] = [];
    for (const item of list) {
      const hp = parseHostPort(item);
      if (!hp) {
        problems.push(
          `${cluster.from}: bad node ${JSON.stringify(item)} (accepted: a comma-separated list of host:port, port 1-65535)`,
        );
        continue;
      }
      nodes.push(hp);
    }
    if (list.length === 0 || (nodes.length === 0 && list.every((x) => x.trim() === '')))
      problems.push(`${cluster.from}: empty (accepted: host:port,host:port)`);
    return { mode: 'cluster', nodes, ...(password === undefined ? {} : { password }), tls: false };
  }
  if (url) {
    const s = String(url.value);
    let u: URL | undefined;
    try {
      u = new URL(s);
    } catch {
      u = undefined;
    }
    if (!u || (u.protocol !== 'redis:' && u.protocol !== 'rediss:') || u.hostname === '') {
      problems.push(
        `${url.from}=${JSON.stringify(s.replace(/\/\/[^@/]*@/, '//***@'))}: must be a URL like redis://[:password@]host[:port][/db] or rediss://...`,
      );
      return null;
    }
    const port = u.port === '' ? 6379 : Number(u.port);
    let urlDb = db;
    const path = u.pathname.replace(/^\//, '');
    if (path !== '') {
      const n = Number(path);
      if (!Number.isInteger(n) || n < 0 || n > 15)
        problems.push(
          `${url.from}: database ${JSON.stringify(path)} in the path must be an integer from 0 to 15`,
        );
      else urlDb = n;
    }
    const urlPw = u.password === '' ? undefined : decodeURIComponent(u.password);
    const pw = password ?? urlPw;
    return {
      mode: 'single',
      host: u.hostname.replace(/^\[|\]$/g, ''),
      port,
      db: urlDb,
      tls: u.protocol === 'rediss:',
      ...(pw === undefined ? {} : { password: pw }),
    };
  }
  const host = hostR === undefined ? '127.0.0.1' : String(hostR.value);
  if (!/^[A-Za-z0-9.:[\]-]{1,255}$/.test(host))
    problems.push(`${hostR!.from}=${JSON.stringify(host)}: must be a host name or IP address`);
  let port = 6379;
  if (portR) {
    const n = Number(portR.value);
    if (!Number.isInteger(n) || n < 1 || n > 65535 || String(portR.value).trim() === '')
      problems.push(`${portR.from}=${JSON.stringify(portR.value)}: must be an integer from 1 to 65535`);
    else port = n;
  }
  return { mode: 'single', host, port, db, tls: false, ...(password === undefined ? {} : { password }) };
}

/** The configuration with secrets masked, for logs and `/api/config`. */
export function redactConfig(config: BrokerConfig): Record<string, unknown> {
  const redis =
    config.redis === null
      ? null
      : { ...config.redis, ...(config.redis.password === undefined ? {} : { password: '***' }) };
  const ws = config.ws.jwtSecret === undefined ? config.ws : { ...config.ws, jwtSecret: '***' };
  return { ...config, redis, ws };
}
