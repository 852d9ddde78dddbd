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
    for (const item of v) assertPlainData(item, depth + 1);
    return;
  }
  const proto: unknown = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) throw notPlain('an object that is not a plain map');
  for (const key of Object.keys(v)) {
    assertPlainData((v as Record<string, unknown>)[key], depth + 1);
  }
}

function notPlain(what: string): BuilderError {
  return new BuilderError('BUILDER_ERR_NOT_PLAIN_DATA', `message contains ${what}`);
}
