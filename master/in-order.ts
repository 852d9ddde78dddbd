/**
 * Runs `fn` once the work queued before it under `key` has settled: one at a time per key, in
 * the order asked. `queues` holds each key's tail (never rejecting); a key's entry goes when its
 * last work is done.
 */
export function inOrder<T>(queues: Map<string, Promise<void>>, key: string, fn: () => Promise<T>): Promise<T> {
  const run = (queues.get(key) ?? Promise.resolve()).then(fn);
  const tail = run.then(
    () => undefined,
    () => undefined,
  );
  queues.set(key, tail);
  void tail.then(() => {
    if (queues.get(key) === tail) queues.delete(key);
  });
  return run;
}

