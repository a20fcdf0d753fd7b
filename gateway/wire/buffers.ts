// Large buffers are reused instead of allocated per answer. A page of a list is about 100 KiB,
// reassembled from core etcd's DATA frames and written again translated: two fresh buffers per
// call made V8 count hundreds of MB/s of external memory and run a full collection about ten
// times a second (measured with --trace-gc under the benchmark's list load). Sizes are powers
// of two; at most RETAINED_BYTES wait here, the rest is left to the collector.
//
// A buffer is given back only when nothing refers to it any more (calls/proxy.ts): a core answer once
// it is translated, a frame once http2 reports it written. A buffer not given back is simply
// collected; a buffer the pool did not hand out is ignored.

const SMALLEST = 16 * 1024;
const LARGEST = 4 * 1024 * 1024;
const RETAINED_BYTES = 16 * 1024 * 1024;

const free = new Map<number, Buffer[]>();
const handedOut = new WeakSet<ArrayBufferLike>();
// Given back and not yet taken again: a second giveBack of the same buffer is ignored.
const waiting = new WeakSet<ArrayBufferLike>();
let retainedBytes = 0;

/** A buffer of at least `size` bytes (its contents are stale: write before reading). */
export function takeBuffer(size: number): Buffer {
  if (size < SMALLEST || size > LARGEST) return Buffer.allocUnsafe(size);
  const rounded = 2 ** Math.ceil(Math.log2(size));
  const reused = free.get(rounded)?.pop();
  if (reused) {
    retainedBytes -= rounded;
    waiting.delete(reused.buffer);
    return reused;
  }
  const fresh = Buffer.allocUnsafeSlow(rounded);
  handedOut.add(fresh.buffer);
  return fresh;
}

/** Gives back the buffer `view` lies in; the caller must not use any view of it afterwards. */
export function giveBack(view: Uint8Array): void {
  const whole = view.buffer;
  if (!handedOut.has(whole) || waiting.has(whole) || retainedBytes + whole.byteLength > RETAINED_BYTES) return;
  waiting.add(whole);
  let list = free.get(whole.byteLength);
  if (!list) free.set(whole.byteLength, (list = []));
  list.push(Buffer.from(whole));
  retainedBytes += whole.byteLength;
}
