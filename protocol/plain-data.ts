import { BuilderError } from './errors.js';

/** Deepest nesting a peer may send. */
export const MAX_DEPTH = 32;

/**
 * Security: msgpackr decodes extension types (Error, RegExp, Set, Date...) and, with some
 * options, shared or cyclic structures. A hostile peer's message must be plain data only: null,
 * booleans, numbers, strings, byte arrays, arrays and objects whose prototype is Object's. The
 * depth limit also ends any cycle.
 */
export function assertPlainData(v: unknown, depth = 0): void {
  if (v === null || v === undefined) return;
  switch (typeof v) {
    case 'string':
    case 'boolean':
      return;
    case 'number':
      if (!Number.isFinite(v) && !Number.isNaN(v)) return; // Infinity is data too
      return;
    case 'object':
      break;
    default:
      throw notPlain(`a ${typeof v}`);
  }
  if (depth >= MAX_DEPTH) throw notPlain('nesting too deep');
  if (v instanceof Uint8Array) return;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const x: unknown = v[i];
      if (x === null || typeof x === 'string' || typeof x === 'number' || typeof x === 'boolean') continue;
      assertPlainData(x, depth + 1);
    }
    return;
  }
  const proto: unknown = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) throw notPlain('an object that is not a plain map');
  // for-in rather than Object.keys: no array per object on the path every message takes. With the
  // prototype checked above, it visits exactly the own enumerable keys (plus any enumerable key
  // added to Object.prototype, which is then checked too).
  for (const key in v) {
    const x = (v as Record<string, unknown>)[key];
    // Leaves are the common case: settle them without a call.
    if (x === null || typeof x === 'string' || typeof x === 'number' || typeof x === 'boolean') continue;
    assertPlainData(x, depth + 1);
  }
}

function notPlain(what: string): BuilderError {
  return new BuilderError('BUILDER_ERR_NOT_PLAIN_DATA', `message contains ${what}`);
}
