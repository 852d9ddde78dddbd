import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { join, normalize } from 'node:path';
import { promisify } from 'node:util';
import { pino, type Logger } from 'pino';

export const execFileP = promisify(execFile);

/** A silent logger that also keeps every line, for tests that check what was logged. */
export function memoryLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { logger, lines };
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Files for one batch: from memory or from a path on disk. */
export type BatchFile = { name: string; data: Buffer };

/**
 * Writes a batch as the master does: the files in `<incoming>/<id>/`, then the listing under a
 * temporary name renamed to `<id>.listing.json` (the commit mark). `mutate` may edit the listing.
 */
export async function writeBatch(
  incoming: string,
  id: string,
  channel: string,
  files: BatchFile[],
  mutate?: (listing: { version: number; batch: string; job: string; channel: string; files: { name: string; size: number; sha256: string }[] }) => void,
): Promise<void> {
  await mkdir(join(incoming, id), { recursive: true });
  for (const f of files) await writeFile(join(incoming, id, f.name), f.data);
  const listing = { version: 1, batch: id, job: `job-${id}`, channel, files: files.map((f) => ({ name: f.name, size: f.data.length, sha256: sha256(f.data) })) };
  mutate?.(listing);
  const tmp = join(incoming, `.${id}.listing.tmp`);
  await writeFile(tmp, JSON.stringify(listing));
  await rename(tmp, join(incoming, `${id}.listing.json`));
}

/**
 * A static file server on 127.0.0.1 for apt and dnf. It sends no Last-Modified, so a client never
 * gets a 304 for an index rewritten within the same second (python's http.server would).
 */
export async function serveDir(root: string): Promise<{ url: string; server: Server; requests: string[] }> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    const url = decodeURIComponent((req.url ?? '/').split('?')[0]!);
    requests.push(url);
    const p = normalize(join(root, url));
    if (!p.startsWith(root)) {
      res.writeHead(403).end();
      return;
    }
    readFile(p)
      .then((data) => {
        res.writeHead(200, { 'content-length': data.length, 'cache-control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : data);
      })
      .catch(() => res.writeHead(404).end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  return { url: `http://127.0.0.1:${port}`, server, requests };
}

export function closeServer(s: Server | undefined): Promise<void> {
  if (s === undefined) return Promise.resolve();
  s.closeAllConnections();
  return new Promise((resolve) => s.close(() => resolve()));
}

/** Runs a command and returns its exit code and output (never throws on a non-zero exit). */
export function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { env: env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    p.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** An apt client isolated from the host (own APT_CONFIG and state dir; the host's apt.conf.d unread). */
export async function aptClient(root: string, sourcesLine: string): Promise<(args: string[], tool?: string) => Promise<{ code: number; stdout: string; stderr: string }>> {
  for (const d of ['etc/apt/apt.conf.d', 'etc/apt/preferences.d', 'etc/apt/sources.list.d', 'etc/apt/trusted.gpg.d', 'var/lib/dpkg', 'var/lib/apt/lists/partial', 'var/cache/apt/archives/partial', 'var/log/apt']) {
    await mkdir(join(root, d), { recursive: true });
  }
  await writeFile(join(root, 'var/lib/dpkg/status'), '');
  await writeFile(join(root, 'etc/apt/sources.list'), `${sourcesLine}\n`);
  const conf = [
    `Dir "${root}/";`,
    `Dir::State::status "${root}/var/lib/dpkg/status";`,
    `Dir::Etc::Parts "${root}/etc/apt/apt.conf.d";`,
    `Dir::Etc::main "${root}/etc/apt/apt.conf";`,
    `Dir::Etc::sourcelist "${root}/etc/apt/sources.list";`,
    `Dir::Etc::sourceparts "${root}/etc/apt/sources.list.d";`,
    `Dir::Etc::trustedparts "${root}/etc/apt/trusted.gpg.d";`,
    `Dir::Cache "${root}/var/cache/apt";`,
    `Dir::Log "${root}/var/log/apt";`,
    'APT::Architecture "amd64";',
    'APT::Architectures { "amd64"; };',
    'Debug::NoLocking "true";',
    'APT::Sandbox::User "root";',
  ].join('\n');
  await writeFile(join(root, 'apt.conf'), `${conf}\n`);
  const env = { ...process.env, APT_CONFIG: join(root, 'apt.conf'), DEBIAN_FRONTEND: 'noninteractive' };
  return (args, tool = 'apt-get') => run(tool, args, env);
}

/** dnf isolated from the host: its own installroot, cache and no system repos. */
export function dnfClient(root: string, repoUrl: string, gpgKeyFile?: string): (args: string[]) => Promise<{ code: number; stdout: string; stderr: string }> {
  const base = [
    '-q',
    '-y',
    `--installroot=${root}/root`,
    '--releasever=1',
    '--setopt=reposdir=/dev/null',
    `--setopt=cachedir=${root}/cache`,
    '--setopt=rt.gpgcheck=0',
    '--setopt=rt.skip_if_unavailable=0',
    `--repofrompath=rt,${repoUrl}`,
    '--repo=rt',
  ];
  if (gpgKeyFile !== undefined) base.push('--setopt=rt.repo_gpgcheck=1', `--setopt=rt.gpgkey=file://${gpgKeyFile}`);
  return (args) => run('dnf', [...base, ...args]);
}

/** Makes a throwaway ed25519 signing key in its own gpg home; returns its fingerprint. */
export async function makeGpgKey(home: string): Promise<{ fingerprint: string; publicKeyFile: string }> {
  await mkdir(home, { recursive: true, mode: 0o700 });
  const g = (args: string[]): Promise<{ stdout: string }> => execFileP('gpg', ['--homedir', home, '--batch', ...args]);
  await g(['--passphrase', '', '--quick-gen-key', 'Builder Test Repo <repo@builder.invalid>', 'ed25519', 'sign', 'never']);
  const { stdout } = await g(['--with-colons', '--list-keys']);
  const fpr = /^fpr:+([0-9A-F]{40}):/m.exec(stdout)?.[1];
  if (fpr === undefined) throw new Error('no key made');
  const publicKeyFile = join(home, 'repo-key.asc');
  const { stdout: armored } = await g(['--armor', '--export', fpr]);
  await writeFile(publicKeyFile, armored);
  return { fingerprint: fpr, publicKeyFile };
}

/** Ends the gpg-agent that gpg started for `home` (gpg leaves one running per home directory). */
export async function stopGpgAgent(home: string): Promise<void> {
  await run('gpgconf', ['--homedir', home, '--kill', 'gpg-agent']).catch(() => undefined);
}

/** Builds rpms with ONE rpmbuild run (each package a subpackage with its own EVR and arch). */
export async function buildRpms(
  dir: string,
  pkgs: { name: string; version: string; release: string; epoch?: number; arch?: string; requires?: string }[],
): Promise<Map<string, Buffer>> {
  const top = join(dir, 'rpmbuild');
  await mkdir(top, { recursive: true });
  const byArch = new Map<string, typeof pkgs>();
  for (const p of pkgs) {
    const a = p.arch ?? 'x86_64';
    byArch.set(a, [...(byArch.get(a) ?? []), p]);
  }
  for (const [arch, list] of byArch) {
    let spec = [
      'Name: rbtestmain',
      'Version: 1',
      'Release: 1',
      'Summary: main',
      'License: MIT',
      `BuildArch: ${arch}`,
      '%global debug_package %{nil}',
      '%global __os_install_post %{nil}',
      '%global _build_id_links none',
      '%description',
      'main',
      '',
    ].join('\n');
    for (const p of list) {
      spec += [
        `%package -n ${p.name}`,
        `Summary: synthetic package ${p.name}`,
        `Version: ${p.version}`,
        `Release: ${p.release}`,
        ...(p.epoch !== undefined ? [`Epoch: ${p.epoch}`] : []),
        ...(p.requires !== undefined ? [`Requires: ${p.requires}`] : []),
        `%description -n ${p.name}`,
        `${p.name} made by the test suite.`,
        `%files -n ${p.name}`,
        `/usr/share/${p.name}/README`,
        '',
      ].join('\n');
    }
    spec += '%install\n';
    for (const p of list) spec += `mkdir -p %{buildroot}/usr/share/${p.name}\necho ${p.name} > %{buildroot}/usr/share/${p.name}/README\n`;
    spec += '%changelog\n* Sun Nov 22 2026 Builder Tests <tests@builder.invalid> - 1-1\n- first\n';
    const specFile = join(dir, `pkgs-${arch}.spec`);
    await writeFile(specFile, spec);
    const r = await run('rpmbuild', ['--define', `_topdir ${top}`, '--target', arch, '--quiet', '-bb', specFile]);
    if (r.code !== 0) throw new Error(`rpmbuild failed: ${r.stderr}`);
  }
  const out = new Map<string, Buffer>();
  const rpmsDir = join(top, 'RPMS');
  for (const a of await readdir(rpmsDir)) for (const f of await readdir(join(rpmsDir, a))) out.set(f, await readFile(join(rpmsDir, a, f)));
  return out;
}
