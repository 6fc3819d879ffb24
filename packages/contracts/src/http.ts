import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  ConfigError,
  EventBusError,
  ForbiddenError,
  isEventBusError,
  UnauthorizedError,
  ValidationError,
} from '@qe/core';
import { assertAdmin, type Permissions } from '@qe/gateway-auth';
import { type AuditLog, type AuditOutcome, type AuditQuery, checkAuditQuery } from './audit.js';

export interface AuditHandlerOptions {
  audit: AuditLog;
  /**
   * The permissions of the caller (as the gateway derives them from its token:
   * `permissionsFromClaims`). Throw `UnauthorizedError` when there is no valid token.
   * The handler refuses anyone without `admin: true` (`assertAdmin`).
   */
  authorize: (req: IncomingMessage) => Permissions | Promise<Permissions>;
}

const STATUS: Record<string, number> = { VALIDATION: 400, UNAUTHORIZED: 401, FORBIDDEN: 403 };
const HEADERS = {
  'content-type': 'application/json; charset=utf-8',
  'x-content-type-options': 'nosniff',
  'cache-control': 'no-store',
};

/**
 * `GET ?project=&type=&outcome=&since=&until=&limit=` over the audit log, for
 * admins, as a plain `(req, res)` listener the broker can mount on any path.
 * `since`/`until` are epoch ms or ISO 8601. Replies `{ entries: [...] }`; errors
 * are `{ error: { code, message, details } }` with 400/401/403/405/500.
 */
export function createAuditHandler(
  options: AuditHandlerOptions,
): (req: IncomingMessage, res: ServerResponse) => void {
  if (!options?.audit || typeof options.audit.query !== 'function')
    throw new ConfigError('audit', 'must be an AuditLog');
  if (typeof options.authorize !== 'function') throw new ConfigError('authorize', 'must be a function');
  const send = (res: ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}) => {
    if (res.headersSent) return;
    const text = JSON.stringify(body);
    res.writeHead(status, { ...HEADERS, ...extra, 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };
  return (req, res) => {
    void (async () => {
      if (req.method !== 'GET')
        return send(res, 405, { error: { code: 'METHOD', message: 'only GET' } }, { allow: 'GET' });
      let permissions: Permissions;
      try {
        permissions = await options.authorize(req);
      } catch (e) {
        throw isEventBusError(e) ? e : new UnauthorizedError('authentication failed');
      }
      try {
        assertAdmin(permissions ?? { publish: {}, subscribe: {} });
      } catch (e) {
        throw new ForbiddenError('the audit log needs the admin permission (claim admin: true)', {
          details: { permission: 'admin' },
          cause: e,
        });
      }
      const url = new URL(req.url ?? '/', 'http://x');
      const q: AuditQuery = {};
      for (const [k, v] of url.searchParams) {
        if (k === 'project' || k === 'type') q[k] = v;
        else if (k === 'outcome') q.outcome = v as AuditOutcome;
        else if (k === 'since' || k === 'until') q[k] = parseTime(k, v);
        else if (k === 'limit') {
          if (!/^\d+$/.test(v)) throw new ValidationError('limit', 'must be an integer');
          q.limit = Number(v);
        } else
          throw new ValidationError(
            k,
            'unknown query parameter; known: project, type, outcome, since, until, limit',
          );
      }
      checkAuditQuery(q);
      const entries = await options.audit.query(q);
      send(res, 200, { entries });
    })().catch((e: unknown) => {
      if (e instanceof EventBusError || isEventBusError(e)) {
        const err = e as EventBusError;
        send(res, STATUS[err.code] ?? 500, {
          error: { code: err.code, message: err.message, details: err.details },
        });
      } else send(res, 500, { error: { code: 'INTERNAL', message: 'the audit log could not be read' } });
    });
  };
}

function parseTime(field: string, v: string): number {
  const n = /^\d+$/.test(v) ? Number(v) : Date.parse(v);
  if (!Number.isFinite(n)) throw new ValidationError(field, 'must be epoch ms or an ISO 8601 time');
  return n;
}
