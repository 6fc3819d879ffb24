import { EventEmitter } from 'node:events';
import type { Dirent } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type AgentEvent,
  assertKnownKeys,
  type CompiledPattern,
  ConfigError,
  compilePattern,
  type Logger,
  noopLogger,
  ValidationError,
  validatePattern,
} from '@qe/core';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import addFormatsImport from 'ajv-formats';
import type { Redis } from 'ioredis';
import { COMPATIBILITY_MODES, type CompatibilityMode, compatibilityProblems } from './compat.js';
import { ContractDefinitionError, IncompatibleSchemaError, type SchemaIssue } from './errors.js';
import { isDateTime } from './formats.js';
import { compareVersions, parseVersion } from './version.js';

// ajv-formats is CommonJS with a default export; under ESM interop it may arrive wrapped
const addFormats = ((addFormatsImport as unknown as { default?: unknown }).default ??
  addFormatsImport) as unknown as (ajv: Ajv, options: { mode: 'full' | 'fast' }) => Ajv;

export type JsonSchema = boolean | Record<string, unknown>;

/** What a team declares about one version of one event type. */
export interface ContractDefinition {
  /** An event type (`order.created`) or a pattern (`order.*`); the most specific match wins. */
  type: string;
  /** `MAJOR[.MINOR[.PATCH]]`; events carry it in `metadata.version`. */
  version: string;
  /** JSON Schema (draft 2020-12 / 07 subset ajv supports) for `data`. */
  schema: JsonSchema;
  /** Optional JSON Schema for `metadata`. */
  metadataSchema?: JsonSchema;
  /** The team or service that owns the contract. */
  owner: string;
  /** How a new version must relate to the previous one. Default `backward`. */
  compatibility?: CompatibilityMode;
  description?: string;
}

/** A registered contract version. */
export interface Contract extends ContractDefinition {
  compatibility: CompatibilityMode;
  /** Epoch ms. */
  registeredAt: number;
}

export interface RegisterOptions {
  /** Register even if the compatibility check fails (a deliberate breaking change). */
  force?: boolean;
}

/** What happened when a contract was registered (here or in another process). */
export interface ContractChange {
  type: string;
  version: string;
  contract: Contract;
  /** True when this process made the change. */
  local: boolean;
}

/** The result of checking one event. `issues` is empty when it passed. */
export interface ContractCheck {
  /** The contract version the event was checked against; undefined when no contract covers its type. */
  contract: Contract | undefined;
  readonly issues: readonly SchemaIssue[];
}

const NO_ISSUES: readonly SchemaIssue[] = Object.freeze([]);

export interface ContractRegistryOptions {
  /** Shared registry on Redis; omit for an in-memory, process-local one. */
  redis?: Redis;
  /** Key prefix on Redis. Default `qe:contracts`. */
  keyPrefix?: string;
  /**
   * ajv-formats' mode: `full` (default) checks formats exactly (a `date` is a real
   * date); `fast` uses simpler patterns (`2023-02-30` passes as a `date`).
   * `date-time`, the costly one in full mode, is checked by this package's
   * own exact reader, so `full` costs little more than `fast`.
   */
  formats?: 'full' | 'fast';
  logger?: Logger;
}

interface Compiled {
  contract: Contract;
  data?: ValidateFunction;
  meta?: ValidateFunction | null;
}
interface TypeEntry {
  /** Ascending. */
  versions: string[];
  byVersion: Map<string, Compiled>;
  pattern: CompiledPattern;
  /** Literal segments, for "most specific pattern wins". */
  specificity: number;
}

const DEF_KEYS = ['type', 'version', 'schema', 'metadataSchema', 'owner', 'compatibility', 'description'];

/**
 * register-1: adds one contract version if the latest version is still the one
 * the caller checked compatibility against.
 * KEYS[1] versions hash (field `type@version`); KEYS[2] latest hash (field type)
 * ARGV[1] type; ARGV[2] expected latest ('' for none); ARGV[3] version; ARGV[4] JSON; ARGV[5] change channel
 * Reply: 'ok' | 'same' (identical version already there) | 'exists' (same version, other content) | 'conflict'
 */
const REGISTER_1 = `
local latest = redis.call('HGET', KEYS[2], ARGV[1]) or ''
local field = ARGV[1] .. '@' .. ARGV[3]
local existing = redis.call('HGET', KEYS[1], field)
if existing then
  if existing == ARGV[4] then return 'same' end
  return 'exists'
end
if latest ~= ARGV[2] then return 'conflict' end
redis.call('HSET', KEYS[1], field, ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('PUBLISH', ARGV[5], field)
return 'ok'
`;

/**
 * Event contracts by type and version, with compiled validators cached per
 * version. On Redis every process sees the same contracts (registrations are
 * atomic, each announced on a channel: `change` events fire in every process);
 * in memory the registry is local. Reads (`get`, `check`) are synchronous, from
 * the local copy.
 */
export class ContractRegistry extends EventEmitter<{ change: [ContractChange]; error: [Error] }> {
  private readonly redis: Redis | undefined;
  private readonly prefix: string;
  private readonly logger: Logger;
  private readonly ajv: Ajv;
  private readonly entries = new Map<string, TypeEntry>();
  private readonly resolved = new Map<string, TypeEntry | null>();
  private sub: Redis | undefined;
  private started = false;
  private changes = 0;

  constructor(options: ContractRegistryOptions = {}) {
    super();
    assertKnownKeys(options as Record<string, unknown>, ['redis', 'keyPrefix', 'formats', 'logger']);
    const formats = options.formats ?? 'full';
    if (formats !== 'full' && formats !== 'fast')
      throw new ConfigError('formats', "must be 'full' or 'fast'");
    this.redis = options.redis;
    this.prefix = options.keyPrefix ?? 'qe:contracts';
    if (typeof this.prefix !== 'string' || this.prefix === '')
      throw new ConfigError('keyPrefix', 'must be a non-empty string');
    this.logger = options.logger ?? noopLogger;
    this.ajv = new Ajv({ allErrors: true, strict: false });
    addFormats(this.ajv, { mode: formats });
    if (formats === 'full') {
      // the same verdicts as ajv-formats' full date-time, at a tenth of its cost (see formats.ts)
      const def = this.ajv.formats['date-time'] as { compare?: (a: string, b: string) => number | undefined };
      this.ajv.addFormat('date-time', { type: 'string', validate: isDateTime, compare: def.compare });
    }
    if (this.redis && !(this.redis as unknown as { qeContractRegister?: unknown }).qeContractRegister)
      this.redis.defineCommand('qeContractRegister', { numberOfKeys: 2, lua: REGISTER_1 });
  }

  private get keys() {
    return {
      // one hash tag: the registration script touches both keys, so they share a Cluster slot
      versions: `${this.prefix}:{${this.prefix}}:versions`,
      latest: `${this.prefix}:{${this.prefix}}:latest`,
      channel: `${this.prefix}:changes`,
    };
  }

  /** On Redis: subscribes to changes, then loads every contract. In memory: nothing to do. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    if (!this.redis) return;
    const sub = this.redis.duplicate();
    sub.on('error', (e) => this.logger.warn('contract registry subscriber error', { error: e.message }));
    this.sub = sub;
    await sub.subscribe(this.keys.channel);
    sub.on('message', (_ch, field: string) => {
      void this.loadField(field).catch((e: Error) => {
        if (this.listenerCount('error') > 0) this.emit('error', e);
      });
    });
    const all = await this.redis.hgetall(this.keys.versions);
    for (const json of Object.values(all)) this.install(JSON.parse(json) as Contract, false, false);
  }

  async close(): Promise<void> {
    const s = this.sub;
    this.sub = undefined;
    this.started = false;
    if (s) await s.quit().catch(() => s.disconnect());
  }

  private async loadField(field: string): Promise<void> {
    const json = await this.redis!.hget(this.keys.versions, field);
    if (json) this.install(JSON.parse(json) as Contract, false, true);
  }

  /**
   * Adds a contract version. It must be newer than the latest version of its
   * type and compatible with it under the contract's mode, unless `force`.
   * Registering an identical version again is a no-op (declarations at every
   * service start are idempotent); the same version with another schema is refused.
   */
  async register(definition: ContractDefinition, options: RegisterOptions = {}): Promise<Contract> {
    const def = normalizeDefinition(definition);
    const compiled = this.compile(def);
    for (let tries = 0; ; tries++) {
      if (this.redis) await this.refreshType(def.type);
      const entry = this.entries.get(def.type);
      const latest = entry?.versions.at(-1);
      const same = entry?.byVersion.get(def.version);
      if (same) {
        if (sameContent(same.contract, def)) return same.contract;
        throw new ContractDefinitionError(
          'version',
          `${def.type} v${def.version} is already registered with another schema; versions are immutable, register a new one`,
        );
      }
      if (latest !== undefined && compareVersions(def.version, latest) <= 0)
        throw new ContractDefinitionError(
          'version',
          `${def.type} v${def.version} is not newer than the latest registered version ${latest}`,
        );
      if (latest !== undefined && !options.force) {
        const prev = entry!.byVersion.get(latest)!.contract;
        const problems = compatibilityProblems(prev.schema, def.schema, def.compatibility);
        if (def.metadataSchema !== undefined || prev.metadataSchema !== undefined)
          for (const p of compatibilityProblems(
            prev.metadataSchema ?? true,
            def.metadataSchema ?? true,
            def.compatibility,
          ))
            problems.push(`metadata ${p}`);
        if (problems.length)
          throw new IncompatibleSchemaError(def.type, def.version, latest, def.compatibility, problems);
      }
      const contract: Contract = { ...def, registeredAt: Date.now() };
      if (!this.redis) {
        this.install(contract, true, true, compiled);
        return contract;
      }
      const reply = await (
        this.redis as unknown as {
          qeContractRegister(...a: string[]): Promise<string>;
        }
      ).qeContractRegister(
        this.keys.versions,
        this.keys.latest,
        def.type,
        latest ?? '',
        def.version,
        JSON.stringify(contract),
        this.keys.channel,
      );
      if (reply === 'ok') {
        this.install(contract, true, true, compiled);
        return contract;
      }
      // another process registered meanwhile: check again against what it wrote
      if (tries >= 5)
        throw new ContractDefinitionError(
          'version',
          `${def.type}: concurrent registrations kept conflicting`,
        );
    }
  }

  /** Registers several contracts in order (each checked against the one before). */
  async registerAll(
    definitions: readonly ContractDefinition[],
    options: RegisterOptions = {},
  ): Promise<Contract[]> {
    if (!Array.isArray(definitions)) throw new ValidationError('contracts', 'must be an array');
    const out: Contract[] = [];
    for (const d of [...definitions].sort(byTypeThenVersion)) out.push(await this.register(d, options));
    return out;
  }

  /**
   * Contracts a service declares (for a service registry to call when a service
   * announces itself): `owner` defaults to the service; re-declaring the same
   * versions is a no-op; a breaking change is refused as for `register`.
   */
  async declare(
    service: string,
    definitions: readonly (Omit<ContractDefinition, 'owner'> & { owner?: string })[],
  ): Promise<Contract[]> {
    if (typeof service !== 'string' || service === '')
      throw new ValidationError('service', 'must be a non-empty string');
    if (!Array.isArray(definitions)) throw new ValidationError('contracts', 'must be an array');
    return this.registerAll(definitions.map((d) => ({ owner: service, ...d }) as ContractDefinition));
  }

  /**
   * Loads every `*.json` file under `dir` (spec 000's `validation.schemaPath`),
   * recursively; a file holds one contract definition or an array of them.
   * A file that is not valid JSON or not a contract is a `ContractDefinitionError` naming it.
   */
  async loadDirectory(dir: string, options: RegisterOptions = {}): Promise<Contract[]> {
    const defs: ContractDefinition[] = [];
    if (typeof dir !== 'string' || dir === '')
      throw new ConfigError('schemaPath', 'must be a directory path');
    const walk = async (d: string) => {
      let items: Dirent[];
      try {
        items = await readdir(d, { withFileTypes: true });
      } catch (e) {
        throw new ConfigError('schemaPath', `cannot read ${d}: ${(e as Error).message}`, { cause: e });
      }
      items.sort((a, b) => a.name.localeCompare(b.name));
      for (const it of items) {
        const p = join(d, it.name);
        if (it.isDirectory()) await walk(p);
        else if (it.name.endsWith('.json')) {
          let parsed: unknown;
          try {
            parsed = JSON.parse(await readFile(p, 'utf8'));
          } catch (e) {
            throw new ContractDefinitionError(p, `is not valid JSON: ${(e as Error).message}`);
          }
          for (const [i, x] of (Array.isArray(parsed) ? parsed : [parsed]).entries()) {
            try {
              normalizeDefinition(x as ContractDefinition);
            } catch (e) {
              throw new ContractDefinitionError(
                `${p}${Array.isArray(parsed) ? `[${i}]` : ''}`,
                (e as Error).message,
              );
            }
            defs.push(x as ContractDefinition);
          }
        }
      }
    };
    await walk(dir);
    return this.registerAll(defs, options);
  }

  /**
   * The input with `metadata.version` set to the latest version of the contract
   * covering its type, when it names none (a new object; the input is not changed).
   * Publish `contracts.withVersion(input)` so consumers know what it was written against.
   */
  withVersion<E extends { type: string; metadata?: AgentEvent['metadata'] }>(input: E): E {
    if (input?.metadata?.version !== undefined) return input;
    if (typeof input?.type !== 'string') throw new ValidationError('type', 'must be an event type');
    const entry = this.resolve(input.type);
    if (!entry) return input;
    return { ...input, metadata: { ...input.metadata, version: entry.versions.at(-1)! } };
  }

  /** Versions of a contract type, ascending. */
  versions(type: string): string[] {
    return [...(this.entries.get(type)?.versions ?? [])];
  }

  /** A contract version, or the latest when `version` is omitted. */
  get(type: string, version?: string): Contract | undefined {
    const e = this.entries.get(type);
    if (!e) return undefined;
    return e.byVersion.get(version ?? e.versions.at(-1)!)?.contract;
  }

  list(): Contract[] {
    const out: Contract[] = [];
    for (const e of this.entries.values()) for (const v of e.versions) out.push(e.byVersion.get(v)!.contract);
    return out;
  }

  /** The contract type (exact or most specific pattern) that covers an event type. */
  contractTypeFor(eventType: string): string | undefined {
    return this.resolve(eventType)?.pattern.source;
  }

  /**
   * Checks an event's `data` (and `metadata`) against the contract version it
   * names in `metadata.version`, or the latest version when it names none. An
   * event of a type no contract covers passes (`contract` undefined).
   */
  /**
   * Changes with every contract version installed (here or, on Redis, by
   * another process): a `check` result holds for as long as it is unchanged.
   */
  get revision(): number {
    return this.changes;
  }

  check(event: Pick<AgentEvent, 'type' | 'data' | 'metadata'>): ContractCheck {
    if (typeof event?.type !== 'string') throw new ValidationError('type', 'must be an event type');
    const entry = this.resolve(event.type);
    if (!entry) return { contract: undefined, issues: NO_ISSUES };
    const version = event.metadata?.version;
    const c = entry.byVersion.get(version ?? entry.versions.at(-1)!);
    if (!c) {
      // unknown version: checked against nothing; reported by path
      return {
        contract: entry.byVersion.get(entry.versions.at(-1)!)!.contract,
        issues: [
          {
            path: '/metadata/version',
            message: `names version ${JSON.stringify(version)}, not one of ${entry.versions.join(', ')}`,
            keyword: 'contractVersion',
            params: { version, known: entry.versions },
          },
        ],
      };
    }
    const data = (c.data ??= this.ajv.compile(c.contract.schema));
    let issues: SchemaIssue[] | undefined;
    if (!data(event.data)) issues = toIssues('/data', data.errors);
    if (c.meta === undefined)
      c.meta = c.contract.metadataSchema === undefined ? null : this.ajv.compile(c.contract.metadataSchema);
    if (c.meta && !c.meta(event.metadata ?? {}))
      (issues ??= []).push(...toIssues('/metadata', c.meta.errors));
    if (issues) return { contract: c.contract, issues };
    return { contract: c.contract, issues: NO_ISSUES };
  }

  private resolve(eventType: string): TypeEntry | undefined {
    let r = this.resolved.get(eventType);
    if (r === undefined) {
      r = this.entries.get(eventType) ?? null;
      if (!r)
        for (const e of this.entries.values())
          if (!e.pattern.exact && e.pattern.matches(eventType) && (!r || e.specificity > r.specificity))
            r = e;
      if (this.resolved.size > 10_000) this.resolved.clear();
      this.resolved.set(eventType, r);
    }
    return r ?? undefined;
  }

  private compile(def: ContractDefinition): Compiled {
    const compiled: Compiled = { contract: def as Contract };
    try {
      compiled.data = this.ajv.compile(def.schema);
    } catch (e) {
      throw new ContractDefinitionError('schema', `${def.type} v${def.version}: ${(e as Error).message}`);
    }
    try {
      compiled.meta = def.metadataSchema === undefined ? null : this.ajv.compile(def.metadataSchema);
    } catch (e) {
      throw new ContractDefinitionError(
        'metadataSchema',
        `${def.type} v${def.version}: ${(e as Error).message}`,
      );
    }
    return compiled;
  }

  private async refreshType(type: string): Promise<void> {
    const latest = await this.redis!.hget(this.keys.latest, type);
    if (latest && !this.entries.get(type)?.byVersion.has(latest)) await this.loadField(`${type}@${latest}`);
  }

  private install(contract: Contract, local: boolean, announce: boolean, compiled?: Compiled): void {
    let e = this.entries.get(contract.type);
    if (e?.byVersion.has(contract.version)) return;
    if (!e) {
      const pattern = compilePattern(contract.type);
      e = {
        versions: [],
        byVersion: new Map(),
        pattern,
        specificity:
          pattern.segments.filter((s) => s !== '*' && s !== '**').length * 2 -
          pattern.segments.filter((s) => s === '**').length,
      };
      this.entries.set(contract.type, e);
      this.resolved.clear();
    }
    e.byVersion.set(contract.version, compiled ? { ...compiled, contract } : { contract });
    e.versions.push(contract.version);
    this.changes++;
    e.versions.sort(compareVersions);
    if (announce) this.emit('change', { type: contract.type, version: contract.version, contract, local });
  }
}

function toIssues(root: string, errors: ErrorObject[] | null | undefined): SchemaIssue[] {
  return (errors ?? []).map((e) => {
    let path = root + e.instancePath;
    if (e.keyword === 'required') path += `/${(e.params as { missingProperty: string }).missingProperty}`;
    else if (e.keyword === 'additionalProperties')
      path += `/${(e.params as { additionalProperty: string }).additionalProperty}`;
    return {
      path,
      message: e.message ?? e.keyword,
      keyword: e.keyword,
      params: e.params as Record<string, unknown>,
    };
  });
}

function byTypeThenVersion(a: ContractDefinition, b: ContractDefinition): number {
  return a.type === b.type ? compareVersions(a.version, b.version) : a.type < b.type ? -1 : 1;
}

function sameContent(a: ContractDefinition, b: ContractDefinition): boolean {
  const pick = (c: ContractDefinition) =>
    JSON.stringify([c.schema, c.metadataSchema ?? null, c.owner, c.compatibility ?? 'backward']);
  return pick(a) === pick(b);
}

function normalizeDefinition(
  d: ContractDefinition,
): ContractDefinition & { compatibility: CompatibilityMode } {
  if (typeof d !== 'object' || d === null || Array.isArray(d))
    throw new ContractDefinitionError('contract', 'must be an object');
  assertKnownKeys(d as unknown as Record<string, unknown>, DEF_KEYS, 'contract.', {}, 'validation');
  try {
    validatePattern(d.type);
  } catch (e) {
    throw new ContractDefinitionError('type', (e as Error).message);
  }
  parseVersion(d.version);
  const isSchema = (s: unknown) =>
    typeof s === 'boolean' || (typeof s === 'object' && s !== null && !Array.isArray(s));
  if (!isSchema(d.schema))
    throw new ContractDefinitionError('schema', 'must be a JSON Schema (an object or a boolean)');
  if (d.metadataSchema !== undefined && !isSchema(d.metadataSchema))
    throw new ContractDefinitionError('metadataSchema', 'must be a JSON Schema (an object or a boolean)');
  if (typeof d.owner !== 'string' || d.owner === '')
    throw new ContractDefinitionError('owner', 'must be a non-empty string');
  const compatibility = d.compatibility ?? 'backward';
  if (!COMPATIBILITY_MODES.includes(compatibility))
    throw new ContractDefinitionError('compatibility', `must be one of ${COMPATIBILITY_MODES.join(', ')}`);
  // JSON round trip: what is stored is what every process will read back
  return JSON.parse(JSON.stringify({ ...d, compatibility }));
}
