import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { Config, execute, handle } from '@oclif/core';

/** The four programs this package ships; each is its own oclif CLI over `dist/cli/<bin>/commands`. */
export type BinName = 'master' | 'slave' | 'builder' | 'repo-builder';

/**
 * oclif reads one CLI per package.json, so each bin gets the package's manifest with its own
 * `bin` and command directory swapped in. Also used to render docs/cli.md from the commands.
 */
export function binLoadOptions(bin: BinName): { root: string; pjson: never } {
  const root = fileURLToPath(new URL('../..', import.meta.url));
  const pjson = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as Record<string, unknown> & {
    oclif?: Record<string, unknown>;
  };
  pjson.oclif = {
    ...(pjson.oclif ?? {}),
    bin,
    // Per-user dirs (config, cache, data): ~/.config/builder/ for the CLI people use, builder-<bin> for the daemons.
    dirname: bin === 'builder' ? 'builder' : `builder-${bin}`,
    commands: `./dist/cli/${bin}/commands`,
    topicSeparator: ' ',
  };
  return { root, pjson: pjson as never };
}

/** Orders two strings by UTF-16 code units: for command ids (ASCII), the order `localeCompare` gives them. */
function byCodeUnits(this: string, that: string): number {
  const a = String(this);
  return a < that ? -1 : a > that ? 1 : 0;
}

/**
 * Runs `fn` with `String.prototype.localeCompare` ordering by code units, and puts the original
 * back when it settles. oclif sorts each plugin's command ids with `localeCompare` as it loads
 * the config; V8's first `localeCompare` builds an ICU collator, which pages in about 2.7 MiB of
 * the node binary's collation and locale data and keeps it resident for the life of the process.
 * A daemon has no other use for a collator, and for our command ids (lower-case ASCII, `-`, `:`)
 * the two orders are the same (test/unit/cli/run.test.ts).
 */
export async function withCodeUnitCompare<T>(fn: () => Promise<T>): Promise<T> {
  // eslint-disable-next-line @typescript-eslint/unbound-method -- put back as it was, unbound
  const original = String.prototype.localeCompare;
  String.prototype.localeCompare = byCodeUnits;
  try {
    return await fn();
  } finally {
    String.prototype.localeCompare = original;
  }
}

/** Loads a bin's oclif config (its commands and plugins) without building an ICU collator. */
export function loadBinConfig(bin: BinName): Promise<Config> {
  return withCodeUnitCompare(() => Config.load(binLoadOptions(bin)));
}

/** Runs one of the package's bins. */
export async function runBin(bin: BinName, argv: string[] = process.argv.slice(2)): Promise<void> {
  let config: Config;
  try {
    config = await loadBinConfig(bin);
  } catch (err) {
    // As execute() reports a failure to load: one line and exit 1.
    await handle(err instanceof Error ? err : new Error(String(err)));
    return;
  }
  // Given a loaded Config, oclif reuses its plugins instead of loading (and sorting) them again.
  await execute({ args: argv, loadOptions: config });
}
