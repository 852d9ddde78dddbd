/**
 * The role a peer holds, carried in its certificate's subject as OU=builder-<role>. Only the
 * master's CA signs certificates and it ignores everything in a CSR but the public key, so the
 * role in a certificate the TLS layer verified is trustworthy.
 */
export const ROLES = ['slave', 'client', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export const ROLE_OU_PREFIX = 'builder-';

export function roleToOu(role: Role): string {
  return ROLE_OU_PREFIX + role;
}

export function roleFromOu(ou: unknown): Role | undefined {
  if (typeof ou !== 'string' || !ou.startsWith(ROLE_OU_PREFIX)) return undefined;
  const r = ou.slice(ROLE_OU_PREFIX.length);
  return (ROLES as readonly string[]).includes(r) ? (r as Role) : undefined;
}
