import {
  type AgentEvent,
  assertKnownKeys,
  type CompiledPattern,
  ConfigError,
  compilePattern,
  type Logger,
  type Middleware,
  noopLogger,
} from '@qe/core';
import { ContractViolationError, SchemaValidationError } from './errors.js';
import type { ContractRegistry } from './registry.js';
import { VersionRange } from './version.js';

export interface ContractValidationOptions {
  registry: ContractRegistry;
  /**
   * `true` (default): `publish` refuses an event that fails its contract with
   * `SchemaValidationError` (nothing of the batch is sent). `false`: it is
   * published anyway, counted (`stats().publishInvalid`) and logged.
   */
  strict?: boolean;
  /** Check on publish. Default true. */
  publish?: boolean;
  /** Check on consume (failures are dead-lettered, never handled). Default true. */
  consume?: boolean;
  /**
   * Contract versions this consumer accepts, by event type or pattern:
   * `{ 'order.created': '^1', 'order.*': '>=2 <4' }` (most specific key wins).
   * An event outside its range is dead-lettered. An event without
   * `metadata.version` counts as the latest registered version.
   */
  accept?: Record<string, string>;
  /** Refuse (strict) or count events whose type no contract covers. Default false. */
  requireContract?: boolean;
  logger?: Logger;
}

export interface ContractValidationStats {
  /** Events checked (publish and consume). */
  checked: number;
  /** Publishes refused (strict). */
  publishRefused: number;
  /** Invalid events published anyway (non-strict). */
  publishInvalid: number;
  /** Events dead-lettered on consume for failing their contract. */
  consumeRejected: number;
  /** Of those, because their version is outside the consumer's range. */
  versionRejected: number;
  /** Events whose type no contract covers. */
  uncovered: number;
  /**
   * Consumed events whose schema check was not repeated: this middleware had
   * passed the same event object on publish in this process (the in-memory
   * transport delivers it by reference), under the same registry revision.
   */
  passedOnPublish: number;
}

/** How many of the latest events passed on publish the consume side looks back through. */
const PASSED_KEPT = 256;

/**
 * The latest events this middleware passed on publish, by object, with the
 * registry revision and contract version they passed under: a ring of plain
 * arrays searched newest first. On the in-memory transport an event is
 * consumed a moment after it is published, so it is found a few steps back; an
 * event that is not found is simply checked again. (A WeakMap or a Map per
 * event cost the garbage collector more than the check they saved.)
 */
class RecentlyPassed {
  private readonly events: (AgentEvent | undefined)[];
  private readonly revisions: number[];
  private readonly versions: string[];
  private next = 0;
  constructor(private readonly size: number) {
    this.events = new Array(size).fill(undefined);
    this.revisions = new Array(size).fill(0);
    this.versions = new Array(size).fill('');
  }
  set(e: AgentEvent, revision: number, version: string): void {
    const i = this.next;
    this.events[i] = e;
    this.revisions[i] = revision;
    this.versions[i] = version;
    this.next = i + 1 === this.size ? 0 : i + 1;
  }
  /** The version `e` passed under, if it passed at `revision` and is still remembered. */
  versionOf(e: AgentEvent, revision: number): string | undefined {
    for (let k = 1, i = this.next; k <= this.size; k++) {
      i = i === 0 ? this.size - 1 : i - 1;
      const x = this.events[i];
      if (x === e) return this.revisions[i] === revision ? this.versions[i] : undefined;
      if (x === undefined) return undefined;
    }
    return undefined;
  }
}

const KEYS = ['registry', 'strict', 'publish', 'consume', 'accept', 'requireContract', 'logger'];

export type ContractValidationMiddleware = Middleware & { stats(): ContractValidationStats };

/**
 * Validates events against their contracts: on publish (strict refuses, non-strict
 * counts and logs) and on consume (a failing event is dead-lettered with the
 * issues by path, never handed to the handler). Validators are compiled once per
 * contract version by the registry.
 *
 * Use it bus-wide (`middleware: [contractValidation(...)]`) or per subscription
 * (`subscribe(p, h, { middleware: [contractValidation({ registry, publish: false, accept })] })`).
 */
export function contractValidation(options: ContractValidationOptions): ContractValidationMiddleware {
  if (typeof options !== 'object' || options === null) throw new ConfigError('options', 'must be an object');
  assertKnownKeys(options, KEYS);
  const { registry } = options;
  if (!registry || typeof (registry as { check?: unknown }).check !== 'function')
    throw new ConfigError('registry', 'must be a ContractRegistry');
  const strict = options.strict ?? true;
  const logger = options.logger ?? noopLogger;
  const requireContract = options.requireContract ?? false;
  for (const k of ['strict', 'publish', 'consume', 'requireContract'] as const)
    if (options[k] !== undefined && typeof options[k] !== 'boolean')
      throw new ConfigError(k, 'must be a boolean');
  const ranges: { pattern: CompiledPattern; range: VersionRange; specificity: number }[] = [];
  for (const [p, r] of Object.entries(options.accept ?? {})) {
    let pattern: CompiledPattern;
    let range: VersionRange;
    try {
      pattern = compilePattern(p);
      range = new VersionRange(r);
    } catch (e) {
      throw new ConfigError(`accept.${p}`, (e as Error).message);
    }
    const specificity = pattern.segments.filter((s) => s !== '*' && s !== '**').length;
    ranges.push({ pattern, range, specificity: pattern.exact ? 1000 : specificity });
  }
  ranges.sort((a, b) => b.specificity - a.specificity);
  const rangeFor = (type: string) => ranges.find((r) => r.pattern.matches(type))?.range;

  const stats: ContractValidationStats = {
    checked: 0,
    publishRefused: 0,
    publishInvalid: 0,
    consumeRejected: 0,
    versionRejected: 0,
    uncovered: 0,
    passedOnPublish: 0,
  };
  const passed = new RecentlyPassed(PASSED_KEPT);
  const outsideRange = (event: AgentEvent, version: string) => {
    const range = ranges.length ? rangeFor(event.type) : undefined;
    if (!range || range.test(version)) return;
    stats.consumeRejected++;
    stats.versionRejected++;
    throw new ContractViolationError(event.type, version, [
      {
        path: '/metadata/version',
        message: `version ${version} is outside the accepted range ${range.source}`,
        keyword: 'acceptRange',
        params: { version, range: range.source },
      },
    ]);
  };

  const m: ContractValidationMiddleware = {
    name: 'contract-validation',
    stats: () => ({ ...stats }),
  };
  if (options.publish !== false)
    m.publish = (next) => (events, ctx) => {
      for (const e of events) {
        stats.checked++;
        const r = registry.check(e);
        if (!r.contract) {
          stats.uncovered++;
          if (!requireContract) continue;
          const err = new SchemaValidationError(e.type, 'none', [
            { path: '/type', message: 'no contract covers this event type', keyword: 'contract', params: {} },
          ]);
          if (strict) {
            stats.publishRefused++;
            throw err;
          }
          stats.publishInvalid++;
          logger.warn('event without a contract published', { type: e.type, id: e.id });
          continue;
        }
        const version = e.metadata?.version ?? r.contract.version;
        if (r.issues.length === 0) {
          passed.set(e, registry.revision, version);
          continue;
        }
        if (strict) {
          stats.publishRefused++;
          throw new SchemaValidationError(e.type, version, r.issues);
        }
        stats.publishInvalid++;
        logger.warn('event failing its contract published (non-strict)', {
          type: e.type,
          id: e.id,
          version,
          issues: r.issues,
        });
      }
      return next(events, ctx);
    };
  if (options.consume !== false)
    m.consume = (next) => (event: AgentEvent, ctx) => {
      stats.checked++;
      const known = passed.versionOf(event, registry.revision);
      if (known !== undefined) {
        stats.passedOnPublish++;
        outsideRange(event, known);
        return next(event, ctx);
      }
      const r = registry.check(event);
      if (!r.contract) {
        stats.uncovered++;
        if (requireContract) {
          stats.consumeRejected++;
          throw new ContractViolationError(event.type, undefined, [
            { path: '/type', message: 'no contract covers this event type', keyword: 'contract', params: {} },
          ]);
        }
        return next(event, ctx);
      }
      const version = event.metadata?.version ?? r.contract.version;
      outsideRange(event, version);
      if (r.issues.length) {
        stats.consumeRejected++;
        throw new ContractViolationError(event.type, version, r.issues);
      }
      return next(event, ctx);
    };
  return m;
}
