import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { userInfo } from 'node:os';

/** How long `getent` may take before the lookup falls back to /etc/passwd. */
const GETENT_TIMEOUT_MS = 5_000;

const names = new Map<number, Promise<string | undefined>>();

/**
 * The user name of `uid`, for the job's USER and LOGNAME: looked up once per uid for the life of
 * the process (a lookup may start a process), undefined when the uid has no entry in the user
 * database (then the job gets no USER rather than a wrong one). Never rejects.
 */
export function userNameOf(uid: number): Promise<string | undefined> {
  let p = names.get(uid);
  if (p === undefined) {
    p = lookUpUserName(uid);
    names.set(uid, p);
  }
  return p;
}

/** Where {@link lookUpUserName} looks (tests point them elsewhere). */
export interface UserLookupSources {
  /** The getent command. Default `getent`, found in /usr/bin:/bin:/usr/sbin:/sbin. */
  getent?: string;
  /** Read when getent cannot run. Default `/etc/passwd`. */
  passwdFile?: string;
}

/** One lookup of the name of `uid`, without the cache of {@link userNameOf}. Never rejects. */
export async function lookUpUserName(uid: number, src: UserLookupSources = {}): Promise<string | undefined> {
  if (uid === process.getuid?.() && src.getent === undefined) {
    // Our own uid: getpwuid in-process, through the same name services as getent.
    try {
      return checked(userInfo().username);
    } catch {
      return undefined;
    }
  }
  // Node has no getpwuid for another uid. getent asks the system's name services (files, LDAP,
  // sssd, systemd's dynamic users), so the name is the one `id -un` gives inside the job; only
  // where getent cannot run is /etc/passwd read instead.
  const r = await getent(src.getent ?? 'getent', uid);
  return r === undefined ? fromPasswdFile(src.passwdFile ?? '/etc/passwd', uid) : r.name;
}

/** getent's answer (`name` undefined: no such uid), or undefined when getent could not answer. */
function getent(cmd: string, uid: number): Promise<{ name: string | undefined } | undefined> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      ['passwd', String(uid)],
      { env: { PATH: '/usr/bin:/bin:/usr/sbin:/sbin' }, timeout: GETENT_TIMEOUT_MS, maxBuffer: 64 * 1024 },
      (err, stdout) => {
        if (err === null) {
          resolve({ name: nameFromPasswdLines(stdout, uid) });
          return;
        }
        // Exit 2: getent ran and the name services know no such uid. Anything else (no getent,
        // a timeout, a crash) says nothing about the uid.
        resolve(err.code === 2 ? { name: undefined } : undefined);
      },
    );
  });
}

async function fromPasswdFile(path: string, uid: number): Promise<string | undefined> {
  try {
    return nameFromPasswdLines(await readFile(path, 'utf8'), uid);
  } catch {
    return undefined;
  }
}

/**
 * The name of the first `name:pw:uid:...` line (not a `#` comment) whose uid field is `uid`
 * (getent may also match a user *named* like the number).
 */
export function nameFromPasswdLines(text: string, uid: number): string | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const f = line.split(':');
    if (f.length >= 7 && f[2] === String(uid)) return checked(f[0] ?? '');
  }
  return undefined;
}

/** A name the environment can carry; an empty or multi-line one is no name. */
function checked(name: string): string | undefined {
  return name === '' || /[\0\n\r]/.test(name) ? undefined : name;
}
