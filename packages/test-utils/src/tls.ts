import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestCertificate {
  /** The temp directory holding key.pem and cert.pem. */
  dir: string;
  keyFile: string;
  certFile: string;
  /** The PEM texts, for servers that take them inline. */
  key: string;
  cert: string;
  /** Removes the directory. */
  cleanup(): void;
}

/**
 * A throwaway self-signed certificate (RSA 2048, one day) for `localhost` and
 * 127.0.0.1, made with `openssl` in a new temp directory. Clients trust it by
 * passing `cert` as their CA (or `rejectUnauthorized: false`).
 */
export function testCertificate(): TestCertificate {
  const dir = mkdtempSync(join(tmpdir(), 'qe-test-tls-'));
  const keyFile = join(dir, 'key.pem');
  const certFile = join(dir, 'cert.pem');
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
        '-keyout',
        keyFile,
        '-out',
        certFile,
      ],
      { stdio: 'ignore' },
    );
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    dir,
    keyFile,
    certFile,
    key: readFileSync(keyFile, 'utf8'),
    cert: readFileSync(certFile, 'utf8'),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
