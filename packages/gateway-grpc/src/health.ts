import {
  type ServerUnaryCall,
  type ServerWritableStream,
  type sendUnaryData,
  status,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import type { QEEventBus } from '@qe/core';
import { EVENT_BUS_SERVICE } from './proto.js';
import { toStatus } from './status.js';

type ServingStatus = 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';
interface CheckRequest {
  service?: string;
}
interface CheckReply {
  status: ServingStatus;
}

/** Names a health client may ask about: the whole server (`''`) and the event bus service. */
const KNOWN = new Set(['', EVENT_BUS_SERVICE]);

export interface HealthService {
  implementation: UntypedServiceImplementation;
  /** Ends every Watch stream (the gateway is closing). */
  close(): void;
}

/**
 * The standard `grpc.health.v1.Health` service over the bus's own health:
 * SERVING while the bus is healthy or degraded, NOT_SERVING when it is
 * unhealthy or the gateway is closing. Open to every caller, without a token,
 * as load balancers and probes expect. `Watch` streams share one poll of the
 * bus every `intervalMs`, however many there are, and hear only of changes.
 */
export function createHealthService(
  bus: QEEventBus,
  intervalMs: number,
  isClosing: () => boolean,
): HealthService {
  const current = async (): Promise<ServingStatus> => {
    if (isClosing()) return 'NOT_SERVING';
    try {
      return (await bus.healthCheck()).status === 'unhealthy' ? 'NOT_SERVING' : 'SERVING';
    } catch {
      return 'NOT_SERVING';
    }
  };
  const watchers = new Set<{
    call: ServerWritableStream<CheckRequest, CheckReply>;
    last: ServingStatus;
    known: boolean;
  }>();
  let poll: NodeJS.Timeout | undefined;
  const tick = async () => {
    const now = await current();
    for (const w of watchers)
      if (w.known && w.last !== now) {
        w.last = now;
        w.call.write({ status: now });
      }
  };
  const implementation: UntypedServiceImplementation = {
    Check: (call: ServerUnaryCall<CheckRequest, CheckReply>, callback: sendUnaryData<CheckReply>) => {
      const service = typeof call.request?.service === 'string' ? call.request.service : '';
      if (!KNOWN.has(service))
        return callback({ code: status.NOT_FOUND, details: `unknown service ${JSON.stringify(service)}` });
      current().then(
        (s) => callback(null, { status: s }),
        (err) => callback(toStatus(err)),
      );
    },
    Watch: (call: ServerWritableStream<CheckRequest, CheckReply>) => {
      call.on('error', () => {});
      const service = typeof call.request?.service === 'string' ? call.request.service : '';
      // the standard: an unknown service is reported as such, and the stream stays open
      const w = { call, last: 'SERVICE_UNKNOWN' as ServingStatus, known: KNOWN.has(service) };
      watchers.add(w);
      if (!w.known) call.write({ status: 'SERVICE_UNKNOWN' });
      call.on('cancelled', () => {
        watchers.delete(w);
        if (watchers.size === 0) {
          clearInterval(poll);
          poll = undefined;
        }
      });
      if (!poll && w.known) {
        poll = setInterval(() => void tick(), intervalMs);
        poll.unref();
      }
      if (w.known)
        void current().then((s) => {
          if (watchers.has(w) && w.last === 'SERVICE_UNKNOWN') {
            w.last = s;
            call.write({ status: s });
          }
        });
    },
  };
  return {
    implementation,
    close() {
      clearInterval(poll);
      poll = undefined;
      for (const w of watchers) {
        w.call.write({ status: 'NOT_SERVING' });
        w.call.end();
      }
      watchers.clear();
    },
  };
}
