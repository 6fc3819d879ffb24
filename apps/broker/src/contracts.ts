import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  ContractRegistry,
  type ContractValidationMiddleware,
  CrossProjectMessenger,
  contractValidation,
  createAuditHandler,
  type ProjectConfig,
} from '@qe/contracts';
import {
  ConfigError,
  type Logger,
  type Middleware,
  type QEEventBus,
  toError,
  UnauthorizedError,
} from '@qe/core';
import { ALLOW_ALL, createTokenVerifier, extractToken, permissionsFromClaims } from '@qe/gateway-auth';
import type { Redis } from 'ioredis';
import type { BrokerConfig } from './config.js';

/** What the dashboard shows of contracts and cross-project messaging. */
export interface ContractsView {
  /** Contract checks: events refused on publish, published anyway (non-strict), dead-lettered on consume. */
  validation: {
    checked: number;
    publishRefused: number;
    publishInvalid: number;
    consumeRejected: number;
  } | null;
  /**
   * Cross-project messages by outcome (`delivered` and each refusal reason),
   * from the shared audit log: every process's messages since this broker started.
   */
  crossProject: { messages: Record<string, number>; receiveRejected: number } | null;
}

/**
 * The broker's `@qe/contracts` parts, from its configuration: a contract
 * registry loaded from `CONTRACTS_SCHEMA_PATH` (shared through Redis when the
 * broker is on Redis) whose validation middleware sits on the broker's bus, and
 * cross-project messaging for the projects of `PROJECTS_FILE`, with its audit
 * log served to admins at `GET /audit`.
 */
export class BrokerContracts {
  readonly middleware: ContractValidationMiddleware | null;
  private readonly registry: ContractRegistry | null;
  private messenger: CrossProjectMessenger | null = null;
  private readonly projects: ProjectConfig[] | null;
  private auditHandler: ((req: IncomingMessage, res: ServerResponse) => void) | null = null;
  /** Outcomes counted from the audit log since start, and where the count got to. */
  private readonly outcomes: Record<string, number> = {};
  private countedUntil = Date.now();
  private counter: NodeJS.Timeout | null = null;

  constructor(
    private readonly config: BrokerConfig,
    private readonly logger: Logger,
    private readonly redis: () => Redis | null,
  ) {
    this.projects = config.projectsFile === undefined ? null : readProjects(config.projectsFile);
    const needsRegistry = config.contracts !== undefined || this.projects !== null;
    const client = needsRegistry ? redis() : null;
    this.registry = needsRegistry
      ? new ContractRegistry({
          ...(client ? { redis: client, keyPrefix: `${config.keyPrefix}:contracts` } : {}),
          logger,
        })
      : null;
    this.middleware =
      config.contracts && this.registry
        ? contractValidation({ registry: this.registry, strict: config.contracts.strict, logger })
        : null;
  }

  /** The middleware to put on the broker's bus (none without contracts). */
  busMiddleware(): Middleware[] {
    return this.middleware ? [this.middleware] : [];
  }

  /** Before the bus takes events: contracts loaded. */
  async startRegistry(): Promise<void> {
    if (!this.registry) return;
    await this.registry.start();
    if (this.config.contracts) {
      const loaded = await this.registry.loadDirectory(this.config.contracts.schemaPath);
      this.logger.info('contracts loaded', {
        count: loaded.length,
        schemaPath: this.config.contracts.schemaPath,
      });
    }
  }

  /** After the bus started: the projects registered, the audit route ready. */
  async startMessaging(bus: QEEventBus): Promise<void> {
    if (!this.projects || !this.registry) return;
    const client = this.redis();
    this.messenger = new CrossProjectMessenger({
      bus,
      contracts: this.registry,
      logger: this.logger,
      ...(client ? { redis: client, keyPrefix: `${this.config.keyPrefix}:xp` } : {}),
    });
    await this.messenger.start();
    for (const p of this.projects) await this.messenger.registerProject(p);
    this.logger.info('projects registered', { count: this.projects.length });
    const audit = this.messenger.audit;
    const count = async () => {
      // entries of every process on this Redis, not only what this broker sent: read what came since the last count
      const until = Date.now() - 1;
      const entries = await audit.query({ since: this.countedUntil, until, limit: 10_000 });
      for (const e of entries) this.outcomes[e.outcome] = (this.outcomes[e.outcome] ?? 0) + 1;
      this.countedUntil = until + 1;
    };
    this.counter = setInterval(
      () =>
        void count().catch((e) =>
          this.logger.warn('cannot read the audit log', { error: toError(e).message }),
        ),
      1000,
    );
    this.counter.unref();
    const secret = this.config.ws.jwtSecret;
    const verify = secret === undefined ? undefined : createTokenVerifier({ algorithms: ['HS256'], secret });
    this.auditHandler = createAuditHandler({
      audit: this.messenger.audit,
      authorize: async (req) => {
        if (!verify) return ALLOW_ALL; // no authentication configured: the broker is on loopback
        const token = extractToken(req.headers as Record<string, string>, req.url ?? '');
        if (!token) throw new UnauthorizedError('a bearer token is required');
        return permissionsFromClaims((await verify(token)).claims, 'qe');
      },
    });
  }

  /** `GET /audit`: false when cross-project messaging is not configured. */
  serveAudit(req: IncomingMessage, res: ServerResponse): boolean {
    if (!this.auditHandler) return false;
    this.auditHandler(req, res);
    return true;
  }

  /** The cross-project messenger, once started (for embedding and tests). */
  get crossProject(): CrossProjectMessenger | null {
    return this.messenger;
  }

  /** Null when neither contracts nor projects are configured. */
  view(): ContractsView | null {
    if (!this.middleware && !this.messenger) return null;
    const v = this.middleware?.stats();
    return {
      validation: v
        ? {
            checked: v.checked,
            publishRefused: v.publishRefused,
            publishInvalid: v.publishInvalid,
            consumeRejected: v.consumeRejected,
          }
        : null,
      crossProject: this.messenger
        ? { messages: { ...this.outcomes }, receiveRejected: this.messenger.stats().receiveRejected }
        : null,
    };
  }

  async close(): Promise<void> {
    if (this.counter) clearInterval(this.counter);
    await this.messenger
      ?.close()
      .catch((e) => this.logger.warn('cross-project close failed', { error: toError(e).message }));
    await this.registry
      ?.close()
      .catch((e) => this.logger.warn('contracts close failed', { error: toError(e).message }));
  }
}

/** The projects file: a JSON array of project configurations, with `credentialHash` rather than secrets. */
function readProjects(path: string): ProjectConfig[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new ConfigError('PROJECTS_FILE', `cannot read ${path} as JSON (${toError(err).message})`);
  }
  if (!Array.isArray(parsed))
    throw new ConfigError('PROJECTS_FILE', `${path} must hold a JSON array of projects`);
  for (const [i, p] of parsed.entries())
    if (p && typeof p === 'object' && 'credential' in p)
      throw new ConfigError(
        `PROJECTS_FILE[${i}].credential`,
        'keep secrets out of the file: store credentialHash (hashCredential(secret) from @qe/contracts)',
      );
  return parsed as ProjectConfig[];
}
