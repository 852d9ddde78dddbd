/**
 * A real master process whose cron accepts six-field expressions (a seconds field), for the cron
 * end-to-end test: `master run` has no flag for it (cron has minute resolution for operators),
 * and a process test cannot wait minutes. Everything else is what `master run` does: the same
 * Master class, listeners, store and dispatcher, a pino logger on stdout, SIGTERM to stop.
 *   node dist/test/integration/farm/seconds-cron-master.js --dir D --listen H:P --enroll-listen H:P [--slave-grace MS]
 */
import { parseArgs } from 'node:util';
import pino from 'pino';
import { Master } from '../../../master/index.js';

const { values } = parseArgs({
  options: {
    dir: { type: 'string' },
    listen: { type: 'string', default: '127.0.0.1:0' },
    'enroll-listen': { type: 'string', default: '127.0.0.1:0' },
    'slave-grace': { type: 'string', default: '60000' },
  },
});
if (!values.dir) throw new Error('--dir is required');
const log = pino({ level: process.env.BUILDER_LOG_LEVEL ?? 'info' });
const master = new Master({
  dir: values.dir,
  listen: values.listen,
  enrollListen: values['enroll-listen'],
  slaveGraceMs: Number(values['slave-grace']),
  cron: { allowSeconds: true },
  logger: log,
});
await master.start();
const stop = () => {
  master.stop().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
