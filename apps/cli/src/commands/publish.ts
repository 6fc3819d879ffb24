import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Context } from '../context.js';
import { CliError, UsageError } from '../errors.js';
import { parsePriority } from '../io.js';
import { closeBus, openBus } from '../redis.js';
import { GatewaySocket } from '../ws.js';

export interface PublishOptions {
  file?: string;
  agentId: string;
  priority?: string;
  correlationId?: string;
  swarmId?: string;
}

type EventIn = Record<string, unknown> & { type?: unknown };

function parseData(raw: string | undefined): unknown {
  if (raw === undefined) return {};
  try {
    return JSON.parse(raw);
  } catch {
    throw new UsageError(
      `data ${JSON.stringify(raw)} is not JSON`,
      `quote it for the shell: '{"taskId":"t-1"}'`,
    );
  }
}

async function readNdjson(file: string): Promise<EventIn[]> {
  const input = file === '-' ? process.stdin : createReadStream(file);
  const events: EventIn[] = [];
  let n = 0;
  try {
    for await (const line of createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY })) {
      n++;
      if (line.trim() === '') continue;
      let e: unknown;
      try {
        e = JSON.parse(line);
      } catch {
        throw new UsageError(
          `${file === '-' ? 'stdin' : file}:${n}: not JSON`,
          'one event object per line (NDJSON)',
        );
      }
      if (e === null || typeof e !== 'object' || Array.isArray(e) || typeof (e as EventIn).type !== 'string')
        throw new UsageError(
          `${file === '-' ? 'stdin' : file}:${n}: expected an event object with a "type"`,
          'e.g. {"type":"task.create","data":{"taskId":"t-1"}}',
        );
      events.push(e as EventIn);
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new UsageError(`${file}: no such file`);
    throw err;
  }
  return events;
}

/** `qe publish [type] [data]` / `--file f.ndjson` / NDJSON on stdin. */
export async function publish(
  ctx: Context,
  type: string | undefined,
  data: string | undefined,
  o: PublishOptions,
) {
  let events: EventIn[];
  if (type !== undefined && o.file !== undefined)
    throw new UsageError('give either <type> [data] or --file, not both');
  if (type !== undefined) events = [{ type, data: parseData(data) }];
  else if (o.file !== undefined) events = await readNdjson(o.file);
  else if (!process.stdin.isTTY) events = await readNdjson('-');
  else
    throw new UsageError(
      'nothing to publish',
      'qe publish <type> [json-data], --file events.ndjson, or pipe NDJSON',
    );
  if (events.length === 0) throw new UsageError('no events in the input');
  const priority = o.priority === undefined ? undefined : parsePriority(o.priority);
  const complete = events.map((e) => {
    const metadata = (e.metadata ?? {}) as Record<string, unknown>;
    return {
      ...e,
      agentId: e.agentId ?? o.agentId,
      // a file may say "priority": "high" as well as 1
      ...(typeof e.priority === 'string' ? { priority: parsePriority(e.priority, 'priority') } : {}),
      ...(e.priority === undefined && priority !== undefined ? { priority } : {}),
      ...(e.swarmId === undefined && o.swarmId !== undefined ? { swarmId: o.swarmId } : {}),
      ...(o.correlationId !== undefined && metadata.correlationId === undefined
        ? { metadata: { ...metadata, correlationId: o.correlationId } }
        : e.metadata === undefined
          ? {}
          : { metadata }),
      data: e.data ?? {},
    };
  });
  let ids: string[];
  if (ctx.mode === 'redis') {
    const bus = await openBus(ctx);
    try {
      ids = (await bus.publishBatch(complete as never)).map((e) => e.id);
    } catch (err) {
      throw new CliError(`publish failed: ${(err as Error).message}`);
    } finally {
      await closeBus(bus);
    }
  } else {
    const socket = await GatewaySocket.connect(ctx);
    try {
      ids = await socket.publish(complete);
    } finally {
      await socket.close();
    }
  }
  if (ctx.json) ctx.out.line({ published: ids.length, ids });
  else {
    ctx.out.text(`${ctx.out.c.green('published')} ${ids.length} event${ids.length === 1 ? '' : 's'}`);
    for (const id of ids) ctx.out.text(`  ${id}`);
  }
}
