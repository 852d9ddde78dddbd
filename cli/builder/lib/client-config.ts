import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { BuilderError } from '../../../protocol/errors.js';
import { parseHostPort } from '../../../protocol/rpc-client.js';

/** Name of the per-user configuration file, inside oclif's config dir (e.g. ~/.config/builder/). */
export const CONFIG_FILE_NAME = 'config.json';

/** What the config file may hold. Every field optional; flags and environment win over it. */
export interface BuilderConfigFile {
  /** HOST:PORT of the master's main (mutual TLS) listener. */
  master?: string;
  /** Identity directory (ca.pem, cert.pem, key.pem); relative paths are taken from the config file's directory. */
  identity?: string;
}

/** Where the master address and the identity came from: shown in errors, so a wrong source is easy to spot. */
export type ConfigSource = 'flag' | 'env' | 'config';

/** The resolved connection settings of one command. */
export interface ClientConfig {
  master: { host: string; port: number; text: string; source: ConfigSource };
  identity: { dir: string; source: ConfigSource };
  configPath: string;
}

/** Inputs of {@link resolveClientConfig}; only the entry point (the command) reads the environment. */
export interface ResolveInputs {
  flagMaster?: string | undefined;
  flagIdentity?: string | undefined;
  envMaster?: string | undefined;
  envIdentity?: string | undefined;
  configDir: string;
}

async function readConfigFile(path: string): Promise<BuilderConfigFile | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new BuilderError('BUILDER_ERR_CONFIG', `cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new BuilderError('BUILDER_ERR_CONFIG', `${path} is not valid JSON`, { hint: 'expected {"master": "HOST:PORT", "identity": "DIR"}' });
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new BuilderError('BUILDER_ERR_CONFIG', `${path} must hold a JSON object`, { hint: 'expected {"master": "HOST:PORT", "identity": "DIR"}' });
  }
  const o = v as Record<string, unknown>;
  for (const k of ['master', 'identity'] as const) {
    if (o[k] !== undefined && typeof o[k] !== 'string') throw new BuilderError('BUILDER_ERR_CONFIG', `"${k}" in ${path} must be a string`);
  }
  return { master: o.master as string | undefined, identity: o.identity as string | undefined };
}

const nonEmpty = (s: string | undefined): string | undefined => (s !== undefined && s.trim() !== '' ? s : undefined);

/**
 * Resolves the master address and identity directory: flag, then environment (BUILDER_MASTER,
 * BUILDER_IDENTITY), then the config file. The config file is read only when a flag or
 * variable leaves something unset.
 */
export async function resolveClientConfig(i: ResolveInputs): Promise<ClientConfig> {
  const configPath = join(i.configDir, CONFIG_FILE_NAME);
  let master: { text: string; source: ConfigSource } | undefined;
  let identity: { dir: string; source: ConfigSource } | undefined;
  const fm = nonEmpty(i.flagMaster) ?? undefined;
  const em = nonEmpty(i.envMaster);
  if (fm) master = { text: fm, source: 'flag' };
  else if (em) master = { text: em, source: 'env' };
  const fi = nonEmpty(i.flagIdentity);
  const ei = nonEmpty(i.envIdentity);
  if (fi) identity = { dir: resolve(fi), source: 'flag' };
  else if (ei) identity = { dir: resolve(ei), source: 'env' };
  if (!master || !identity) {
    const file = await readConfigFile(configPath);
    if (!master && file?.master) master = { text: file.master, source: 'config' };
    if (!identity && file?.identity) identity = { dir: resolve(dirname(configPath), file.identity), source: 'config' };
  }
  if (!master) {
    throw new BuilderError('BUILDER_ERR_CONFIG', 'no master address', {
      hint: `pass --master HOST:PORT, set BUILDER_MASTER, or put {"master": "HOST:PORT"} in ${configPath}`,
    });
  }
  if (!identity) {
    throw new BuilderError('BUILDER_ERR_CONFIG', 'no identity directory', {
      hint: `pass --identity DIR, set BUILDER_IDENTITY, or put {"identity": "DIR"} in ${configPath} (DIR holds ca.pem, cert.pem, key.pem)`,
    });
  }
  const where = master.source === 'flag' ? '--master' : master.source === 'env' ? 'BUILDER_MASTER' : `"master" in ${configPath}`;
  const hp = parseHostPort(master.text, `master address (${where})`);
  return { master: { ...hp, text: master.text, source: master.source }, identity, configPath };
}
