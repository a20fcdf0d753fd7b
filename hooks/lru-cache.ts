// Memoising pure functions of text (certificates, specs) for the steady-state hot path.

/**
 * A Map from text to a value with two caps, entries and total key length, that forgets the least
 * recently used entry. Key length matters because observed Secrets may hold anything up to 1 MiB:
 * a count alone would not bound memory.
 */
export class LruCache<V> {
  readonly #entries = new Map<string, V>();
  #chars = 0;
  readonly limit: number;
  readonly maxChars: number;
  constructor(limit: number, maxChars: number) {
    this.limit = limit;
    this.maxChars = maxChars;
  }

  get size(): number {
    return this.#entries.size;
  }

  get chars(): number {
    return this.#chars;
  }

  /** The cached value, or `compute(key)` remembered; `compute` must be a pure function of `key`. */
  getOrCompute(key: string, compute: (key: string) => V): V {
    if (this.#entries.has(key)) return this.get(key)!;
    const value = compute(key);
    this.set(key, value);
    return value;
  }

  get(key: string): V | undefined {
    const value = this.#entries.get(key);
    if (value === undefined) return undefined;
    // Map keeps insertion order: re-inserting marks the entry as most recently used.
    this.#entries.delete(key);
    this.#entries.set(key, value);
    return value;
  }

  set(key: string, value: V): void {
    // One huge entry would flush much of the cache for a single value: it is not kept.
    if (key.length > this.maxChars / 64 || this.#entries.has(key)) return;
    this.#entries.set(key, value);
    this.#chars += key.length;
    for (const oldest of this.#entries.keys()) {
      if (this.#entries.size <= this.limit && this.#chars <= this.maxChars) break;
      this.#entries.delete(oldest);
      this.#chars -= oldest.length;
    }
  }

  clear(): void {
    this.#entries.clear();
    this.#chars = 0;
  }
}
