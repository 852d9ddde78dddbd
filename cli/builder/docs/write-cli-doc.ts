import { fileURLToPath } from 'node:url';
import { writeCliDoc } from './render-cli-doc.js';

// `npm run docs:cli`: regenerate the command reference in docs/cli.md.
const root = fileURLToPath(new URL('../../../../', import.meta.url));
writeCliDoc(root).then(
  (changed) => console.log(changed ? 'docs/cli.md updated' : 'docs/cli.md is current'),
  (e: unknown) => {
    console.error(`Error: ${e instanceof Error ? e.message : String(e)}`);
    process.exitCode = 1;
  },
);
