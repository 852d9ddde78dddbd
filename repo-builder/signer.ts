import { spawn } from 'node:child_process';
import { BuilderError } from '../protocol/errors.js';

/** Which key signs the repositories; gpg finds it in `homedir` (or its default home). */
export interface SignerOptions {
  keyId: string;
  homedir: string | undefined;
}

/**
 * Signs index files with gpg: a clearsigned InRelease, and detached armored signatures for
 * Release.gpg and repomd.xml.asc. The key stays in gpg's keyring; the repo-builder never reads
 * it, and gpg's output never reaches the logs.
 */
export class Signer {
  constructor(private readonly opts: SignerOptions) {}

  private run(args: string[], input: Buffer): Promise<Buffer> {
    const base = ['--batch', '--yes', '--no-tty', '--pinentry-mode', 'loopback', '--passphrase', '', '--local-user', this.opts.keyId];
    if (this.opts.homedir !== undefined) base.unshift('--homedir', this.opts.homedir);
    return new Promise((resolve, reject) => {
      const p = spawn('gpg', [...base, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      let err = '';
      p.stdout.on('data', (c: Buffer) => out.push(c));
      p.stderr.on('data', (c: Buffer) => (err += c.toString()));
      p.on('error', (e) => reject(new BuilderError('BUILDER_ERR_CONFIG', `cannot run gpg: ${e.message}`, { hint: 'install gnupg' })));
      p.on('close', (code) => {
        if (code === 0) resolve(Buffer.concat(out));
        else reject(new BuilderError('BUILDER_ERR_CONFIG', `gpg could not sign with key ${this.opts.keyId} (exit ${code}): ${err.trim().split('\n').slice(-1)[0] ?? ''}`));
      });
      p.stdin.on('error', () => undefined);
      p.stdin.end(input);
    });
  }

  clearsign(data: Buffer): Promise<Buffer> {
    return this.run(['--digest-algo', 'SHA256', '--clearsign', '-o', '-'], data);
  }

  detachArmored(data: Buffer): Promise<Buffer> {
    return this.run(['--digest-algo', 'SHA256', '--armor', '--detach-sign', '-o', '-'], data);
  }
}
