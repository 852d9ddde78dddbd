import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { execute } from '@oclif/core';

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

/** Runs one of the package's bins. */
export async function runBin(bin: BinName, argv: string[] = process.argv.slice(2)): Promise<void> {
  await execute({ args: argv, loadOptions: binLoadOptions(bin) });
}
