import {
  assertKnownKeys,
  type DeadLetter,
  type DeadLetterStore,
  NotFoundError,
  UnsupportedError,
  ValidationError,
  validatePattern,
} from '@qe/core';

/** What `redrive` and `purge` act on: one id, several ids, every match of a pattern, or everything. */
export type DeadLetterSelector =
  | { id: string }
  | { ids: readonly string[] }
  | { pattern: string }
  | { all: true };

/**
 * Tooling over a transport's `DeadLetterStore` (memory or Redis alike): list,
 * inspect, redrive (one, several, by pattern, or all), purge, and the depth
 * for metrics. Selectors are validated; a missing id is a `NOT_FOUND`.
 */
export class DeadLetterManager {
  constructor(private readonly store: DeadLetterStore) {}

  /** For a bus: `DeadLetterManager.of(bus.deadLetters)`. */
  static of(store: DeadLetterStore | undefined): DeadLetterManager {
    if (!store) throw new UnsupportedError('this transport keeps no dead letters');
    return new DeadLetterManager(store);
  }

  list(options: { pattern?: string; limit?: number; after?: string } = {}): Promise<DeadLetter[]> {
    assertKnownKeys(options, ['pattern', 'limit', 'after'], '', {}, 'validation');
    if (options.pattern !== undefined) validatePattern(options.pattern);
    if (
      options.limit !== undefined &&
      (!Number.isInteger(options.limit) || options.limit < 1 || options.limit > 10_000)
    )
      throw new ValidationError('limit', 'must be an integer from 1 to 10,000');
    return this.store.list(options);
  }

  async inspect(id: string): Promise<DeadLetter> {
    const dl = await this.store.get(id);
    if (!dl) throw new NotFoundError(`no dead letter ${JSON.stringify(id)}`);
    return dl;
  }

  depth(): Promise<number> {
    return this.store.count();
  }

  async redrive(selector: DeadLetterSelector): Promise<number> {
    return this.store.redrive(await this.resolve(selector));
  }

  async purge(selector: DeadLetterSelector): Promise<number> {
    return this.store.purge(await this.resolve(selector));
  }

  private async resolve(
    selector: DeadLetterSelector,
  ): Promise<{ ids?: readonly string[]; pattern?: string }> {
    if (selector === null || typeof selector !== 'object')
      throw new ValidationError('selector', 'must be an object');
    if ('id' in selector) {
      await this.inspect(selector.id);
      return { ids: [selector.id] };
    }
    if ('ids' in selector) {
      if (!Array.isArray(selector.ids) || selector.ids.some((i) => typeof i !== 'string'))
        throw new ValidationError('ids', 'must be an array of dead-letter ids');
      return { ids: selector.ids };
    }
    if ('pattern' in selector) {
      validatePattern(selector.pattern);
      return { pattern: selector.pattern };
    }
    if ('all' in selector && selector.all === true) return {};
    throw new ValidationError('selector', 'use { id }, { ids }, { pattern } or { all: true }');
  }
}
