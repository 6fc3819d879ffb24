/**
 * The WebSocket protocol: one JSON object per text frame.
 *
 * Client to gateway:
 *   { op: 'publish', id, event }            one event          -> { op: 'ack', id, ids: [eventId] }
 *   { op: 'publish', id, events: [...] }    a batch, all or nothing -> { op: 'ack', id, ids }
 *   { op: 'subscribe', id, patterns, group?, minPriority? }    -> { op: 'ack', id, subscription }
 *   { op: 'unsubscribe', id, subscription }                    -> { op: 'ack', id }
 *   { op: 'ack', delivery }                 a group delivery was handled (no reply)
 *   { op: 'nack', delivery }                a group delivery failed: the bus retries it
 *   { op: 'ping', id }                                         -> { op: 'pong', id }
 *
 * Gateway to client:
 *   { op: 'event', subscription, event, delivery? }   `delivery` is set for group
 *                                                      subscriptions: ack it (at-least-once)
 *   { op: 'error', id?, error: { code, message, details? } }  `code` is the bus's stable code
 *
 * Every request carries a client-chosen `id` (string or number) echoed in the reply.
 */
export type ClientMessage =
  | { op: 'publish'; id: string | number; event?: unknown; events?: unknown[] }
  | {
      op: 'subscribe';
      id: string | number;
      patterns: string | string[];
      group?: string;
      minPriority?: number;
    }
  | { op: 'unsubscribe'; id: string | number; subscription: string }
  | { op: 'ack' | 'nack'; delivery: string }
  | { op: 'ping'; id: string | number };

export const CLIENT_OPS = ['publish', 'subscribe', 'unsubscribe', 'ack', 'nack', 'ping'] as const;
