import { BuilderError } from '../../protocol/errors.js';

/** One entry of the pool's own record. */
export interface SlotEvent {
  readonly key: string;
  readonly slots: number;
  readonly event: 'start' | 'end';
  readonly at: number;
  /** Slots in use right after this event. */
  readonly usedAfter: number;
}

/** What the pool observed: read by tests and by the agent's status report. */
export interface SlotRecord {
  readonly capacity: number;
  /** The most slots ever in use at once. Never above `capacity`. */
  readonly maxConcurrentSlots: number;
  /** The most attempts ever running at once. */
  readonly maxConcurrentAttempts: number;
  /** Start/end events, oldest first (the oldest are dropped past `maxRecordEvents`). */
  readonly events: readonly SlotEvent[];
  readonly droppedEvents: number;
}

/** A held share of the pool; `release` is idempotent. */
export interface SlotLease {
  readonly key: string;
  readonly slots: number;
  /**
   * The slot numbers held (0-based, `slots` of them, lowest first). No two leases held at once
   * share one, so the first names a work dir no other running attempt uses.
   */
  readonly indices: readonly number[];
  release(): void;
}

/**
 * Capacity in slots, with weighted leases. `tryAcquire` never lets the slots in use exceed the
 * capacity and refuses everything while draining. The pool keeps its own record (maximum slots
 * in use at once, and a log of starts and ends) so the claim "never more than capacity" is
 * checked from what the slave itself did.
 */
export class SlotPool {
  readonly capacity: number;
  private readonly now: () => number;
  private readonly maxRecordEvents: number;
  private readonly leases = new Map<string, number>();
  /** Slot numbers not held, lowest first when taken. */
  private readonly freeIndices = new Set<number>();
  private _used = 0;
  private _draining = false;
  private maxSlots = 0;
  private maxAttempts = 0;
  private events: SlotEvent[] = [];
  private droppedEvents = 0;
  private idleWaiters: Array<() => void> = [];

  private readonly onEvent: ((e: SlotEvent) => void) | undefined;

  constructor(capacity: number, options: { now?: () => number; maxRecordEvents?: number; onEvent?: ((e: SlotEvent) => void) | undefined } = {}) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new BuilderError('BUILDER_ERR_CONFIG', `slot pool capacity must be a positive integer, got ${String(capacity)}`);
    this.capacity = capacity;
    this.now = options.now ?? Date.now;
    this.maxRecordEvents = options.maxRecordEvents ?? 10_000;
    this.onEvent = options.onEvent;
    for (let i = 0; i < capacity; i++) this.freeIndices.add(i);
  }

  get used(): number {
    return this._used;
  }

  get free(): number {
    return this._draining ? 0 : this.capacity - this._used;
  }

  get draining(): boolean {
    return this._draining;
  }

  /** Keys of the leases held now. */
  get running(): string[] {
    return [...this.leases.keys()];
  }

  /**
   * Takes `slots` for `key`, or returns undefined when draining or when fewer are free. A weight
   * above the capacity can never run and throws BUILDER_ERR_INVALID_INPUT; a key already held
   * throws BUILDER_ERR_CONFLICT.
   */
  tryAcquire(key: string, slots: number): SlotLease | undefined {
    if (!Number.isSafeInteger(slots) || slots < 1 || slots > this.capacity) {
      throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `a job of ${String(slots)} slots cannot run on a slave of ${this.capacity}`);
    }
    if (this.leases.has(key)) throw new BuilderError('BUILDER_ERR_CONFLICT', `${key} is already running`);
    if (this._draining || this._used + slots > this.capacity) return undefined;
    this.leases.set(key, slots);
    // The lowest free numbers, so that a slave at low load keeps reusing the same few work dirs.
    const indices = [...this.freeIndices].sort((a, b) => a - b).slice(0, slots);
    for (const i of indices) this.freeIndices.delete(i);
    this._used += slots;
    this.maxSlots = Math.max(this.maxSlots, this._used);
    this.maxAttempts = Math.max(this.maxAttempts, this.leases.size);
    this.recordEvent({ key, slots, event: 'start', at: this.now(), usedAfter: this._used });
    let released = false;
    return {
      key,
      slots,
      indices,
      release: () => {
        if (released) return;
        released = true;
        this.leases.delete(key);
        for (const i of indices) this.freeIndices.add(i);
        this._used -= slots;
        this.recordEvent({ key, slots, event: 'end', at: this.now(), usedAfter: this._used });
        if (this._used === 0) {
          const w = this.idleWaiters;
          this.idleWaiters = [];
          for (const f of w) f();
        }
      },
    };
  }

  private recordEvent(e: SlotEvent): void {
    try {
      this.onEvent?.(e);
    } catch {
      // The observer's failure (say, a full disk under the record file) must not change what runs.
    }
    this.events.push(e);
    if (this.events.length > this.maxRecordEvents) {
      this.events.shift();
      this.droppedEvents++;
    }
  }

  /** A copy of the pool's record. */
  record(): SlotRecord {
    return {
      capacity: this.capacity,
      maxConcurrentSlots: this.maxSlots,
      maxConcurrentAttempts: this.maxAttempts,
      events: [...this.events],
      droppedEvents: this.droppedEvents,
    };
  }

  /** Takes nothing new; what runs goes on. */
  drain(): void {
    this._draining = true;
  }

  /** Takes work again. */
  undrain(): void {
    this._draining = false;
  }

  /**
   * Drains and resolves when nothing runs any more (`drained: true`) or after `deadlineMs`
   * (`drained: false` with the keys still running). The pool stays draining either way.
   */
  drainAndWait(deadlineMs: number): Promise<{ drained: boolean; running: string[] }> {
    this.drain();
    if (this._used === 0) return Promise.resolve({ drained: true, running: [] });
    return new Promise((resolve) => {
      let done = false;
      const timer = setTimeout(() => {
        if (done) return;
        done = true;
        resolve({ drained: false, running: this.running });
      }, Math.max(0, deadlineMs));
      this.idleWaiters.push(() => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve({ drained: true, running: [] });
      });
    });
  }
}
