import { fileURLToPath } from 'node:url';
import type { ServiceDefinition } from '@grpc/grpc-js';
import { loadSync, type PackageDefinition } from '@grpc/proto-loader';

/** The directory holding `qe/v1/event_bus.proto` and `grpc/health/v1/health.proto`, shipped with the package. */
export const PROTO_DIR = fileURLToPath(new URL('../proto/', import.meta.url));
export const EVENT_BUS_PROTO = 'qe/v1/event_bus.proto';
export const HEALTH_PROTO = 'grpc/health/v1/health.proto';
export const EVENT_BUS_SERVICE = 'qe.v1.EventBus';
export const HEALTH_SERVICE = 'grpc.health.v1.Health';

/**
 * How messages look in JavaScript: camelCase fields, int64 as numbers, enums as
 * names, absent fields left undefined (so "not sent" and "empty" differ), the
 * set member of a oneof named by a virtual field (`kind: 'start'`).
 */
const LOADER_OPTIONS = { keepCase: false, longs: Number, enums: String, defaults: false, oneofs: true };

let cached: PackageDefinition | undefined;

/** Both protos, loaded once per process. */
export function packageDefinition(): PackageDefinition {
  cached ??= loadSync([EVENT_BUS_PROTO, HEALTH_PROTO], { ...LOADER_OPTIONS, includeDirs: [PROTO_DIR] });
  return cached;
}

export function serviceDefinition(name: string): ServiceDefinition {
  return packageDefinition()[name] as unknown as ServiceDefinition;
}

/** A request the gateway could not decode: the handler answers INVALID_ARGUMENT with `message`. */
export class Malformed {
  constructor(readonly message: string) {}
}

/**
 * The service with every request decoder wrapped: bytes that are not a valid
 * message of the method's type become a `Malformed` value the handler answers
 * with a typed error, instead of grpc-js's generic INTERNAL.
 */
export function guardedService(name: string): ServiceDefinition {
  const def = serviceDefinition(name);
  const out: Record<string, unknown> = {};
  for (const [method, m] of Object.entries(def)) {
    const decode = m.requestDeserialize;
    out[method] = {
      ...m,
      requestDeserialize: (buf: Buffer) => {
        try {
          return decode(buf);
        } catch (err) {
          return new Malformed(`the request is not a valid ${method} message: ${(err as Error).message}`);
        }
      },
    };
  }
  return out as ServiceDefinition;
}
