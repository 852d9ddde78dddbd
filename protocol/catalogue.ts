import { z } from 'zod';
import type { Role } from '../pki/roles.js';

/**
 * Who is on the other end of a connection. `anonymous` is an unauthenticated peer on the
 * enrollment listener; `master` is the master as seen by a slave.
 */
export type PeerRole = Role | 'anonymous' | 'master';

/** Which side serves a method. */
export type Direction = 'to-master' | 'to-slave' | 'both';

export interface MethodDef<P extends z.ZodType = z.ZodType, R extends z.ZodType = z.ZodType> {
  /** Who serves it. */
  direction: Direction;
  /** Roles allowed to call it. */
  roles: readonly PeerRole[];
  params: P;
  result: R;
  /** Sent as a notification (no id, no reply). */
  notification?: boolean;
  /** One line for docs/protocol.md. */
  summary: string;
}

function def<P extends z.ZodType, R extends z.ZodType>(d: MethodDef<P, R>): MethodDef<P, R> {
  return d;
}

// Reused schema pieces. Names are checked again with protocol/names at storage boundaries.
const name = z.string().min(1).max(64);
const bytes = z.instanceof(Uint8Array);
const authenticated: readonly PeerRole[] = ['slave', 'client', 'admin'];
const people: readonly PeerRole[] = ['client', 'admin'];

/** The one catalogue of methods; both ends use it. Method names are `noun.verb`. */
export const catalogue = {
  'enroll.request': def({
    direction: 'to-master',
    roles: ['anonymous'],
    summary: 'Trade a one-time token and a CSR for a signed slave certificate and the CA certificate.',
    params: z.strictObject({ token: z.string().min(16).max(128), name, csr: z.string().min(100).max(8192) }),
    result: z.strictObject({ cert: z.string(), ca: z.string() }),
  }),
  'session.hello': def({
    direction: 'to-master',
    roles: authenticated,
    summary: 'First call on a connection: the peer says who it is; the master answers with its view.',
    params: z.strictObject({
      version: z.string().max(32),
      software: z.string().max(64).optional(),
    }),
    result: z.strictObject({ name: z.string(), role: z.string(), masterVersion: z.string(), serverTime: z.number() }),
  }),
  'peer.heartbeat': def({
    direction: 'both',
    roles: ['anonymous', 'slave', 'client', 'admin', 'master'],
    notification: true,
    summary: 'Liveness notification, sent when a connection has been quiet for one heartbeat interval.',
    params: z.strictObject({ t: z.number() }),
    result: z.null(),
  }),
  'peer.echo': def({
    direction: 'both',
    roles: ['slave', 'client', 'admin', 'master'],
    summary: 'Returns its params: a diagnostic round trip in either direction (also used by the benchmarks).',
    params: z.strictObject({ data: z.union([bytes, z.string().max(1 << 20)]).optional(), seq: z.number().optional() }),
    result: z.strictObject({ data: z.union([bytes, z.string()]).optional(), seq: z.number().optional() }),
  }),
  'slave.info': def({
    direction: 'to-slave',
    roles: ['master'],
    summary: 'The master asks a slave about itself.',
    params: z.strictObject({}),
    result: z.strictObject({ name: z.string(), pid: z.number(), uptimeMs: z.number(), software: z.string() }),
  }),
  'token.create': def({
    direction: 'to-master',
    roles: ['admin'],
    summary: 'Create a one-time enrollment token.',
    params: z.strictObject({ ttlMs: z.number().int().positive().max(30 * 24 * 3600 * 1000) }),
    result: z.strictObject({ token: z.string(), expiresAt: z.number(), caFingerprint: z.string() }),
  }),
  'slave.list': def({
    direction: 'to-master',
    roles: people,
    summary: 'List enrolled slaves, their certificates and whether they are connected.',
    params: z.strictObject({}),
    result: z.strictObject({
      slaves: z.array(
        z.strictObject({
          name: z.string(),
          serial: z.string(),
          notAfter: z.number(),
          revoked: z.boolean(),
          connected: z.boolean(),
        }),
      ),
    }),
  }),
  'slave.revoke': def({
    direction: 'to-master',
    roles: ['admin'],
    summary: "Revoke every certificate of a slave and drop its connections.",
    params: z.strictObject({ name }),
    result: z.strictObject({ revoked: z.number() }),
  }),
} as const;

export type Catalogue = typeof catalogue;
export type MethodName = keyof Catalogue;
export type ParamsOf<M extends MethodName> = z.output<Catalogue[M]['params']>;
export type ResultOf<M extends MethodName> = z.output<Catalogue[M]['result']>;

/** Methods a given side serves. */
export function methodsServedBy(side: 'master' | 'slave'): MethodName[] {
  return (Object.keys(catalogue) as MethodName[]).filter((m) => {
    const d = catalogue[m].direction;
    return d === 'both' || (side === 'master' ? d === 'to-master' : d === 'to-slave');
  });
}
