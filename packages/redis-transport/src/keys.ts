/**
 * Key layout. Every key of one partition carries the hash tag `{<prefix>:p<k>}`,
 * so the five priority streams and the dead-letter stream of a partition live
 * in one Redis Cluster slot and multi-key commands and scripts stay legal.
 *
 *   <prefix>:{<prefix>:p<k>}:s:<level>   events of priority <level> (0 CRITICAL .. 4 BULK)
 *   <prefix>:{<prefix>:p<k>}:dlq          dead letters of partition k
 *   <prefix>:{<prefix>:p<k>}:delayed      scheduled retries of partition k (sorted set by due time)
 */
export class Keys {
  constructor(
    readonly prefix: string,
    readonly partitions: number,
  ) {}

  tag(partition: number): string {
    return `{${this.prefix}:p${partition}}`;
  }

  private readonly cache: string[] = [];

  stream(partition: number, level: number): string {
    const i = partition * 5 + level;
    return (this.cache[i] ??= `${this.prefix}:${this.tag(partition)}:s:${level}`);
  }

  streams(partition: number): string[] {
    return [0, 1, 2, 3, 4].map((l) => this.stream(partition, l));
  }

  allStreams(): string[] {
    const out: string[] = [];
    for (let p = 0; p < this.partitions; p++) out.push(...this.streams(p));
    return out;
  }

  /** The highest publisher clock (`tick`) a publisher wrote to a partition: a resent publish below it is a repeat. */
  published(partition: number, publisherId: string): string {
    return `${this.prefix}:${this.tag(partition)}:pub:${publisherId}`;
  }

  dlq(partition: number): string {
    return `${this.prefix}:${this.tag(partition)}:dlq`;
  }

  /** Scheduled (delayed) retries of a partition: a sorted set scored by due time. */
  delayed(partition: number): string {
    return `${this.prefix}:${this.tag(partition)}:delayed`;
  }

  allDlqs(): string[] {
    return Array.from({ length: this.partitions }, (_, p) => this.dlq(p));
  }

  /** The partition of a stream or dead-letter key. */
  partitionOf(key: string): number {
    const m = /:p(\d+)\}/.exec(key);
    return m ? Number(m[1]) : 0;
  }

  /** The priority level of a stream key. */
  levelOf(key: string): number {
    return Number(key.slice(key.lastIndexOf(':') + 1));
  }

  /** Partition by agentId (FNV-1a), so one agent's events keep their order. */
  partitionFor(agentId: string): number {
    if (this.partitions === 1) return 0;
    let h = 0x811c9dc5;
    for (let i = 0; i < agentId.length; i++) {
      h ^= agentId.charCodeAt(i);
      h = Math.imul(h, 0x01000193);
    }
    return (h >>> 0) % this.partitions;
  }
}

/** Consumer group names: a node's own broadcast group, or the group key shared by members. */
export function groupName(specId: string, group: string | null, nodeId: string): string {
  return group === null ? `bc:${nodeId}:${specId}` : `g:${specId}`;
}
