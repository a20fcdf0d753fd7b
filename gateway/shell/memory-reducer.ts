// V8 gives memory back (the pages its young generation gives up when it shrinks, which it keeps in a
// pool, and old-space garbage) in the collections of its memory reducer, which runs them once the
// process allocates little. Until a first major collection, the reducer judged an idle gateway's
// allocation rate high at every check (--trace-memory-reducer) and never ran: a gateway idle since
// its start grew from 62.1 to 64.8 MiB in 7 minutes, the pool's pages filling as the probes,
// pings and timers ran (README: Sizing). One major collection starts it: 62.4 to 62.9 MiB after
// 13 minutes instead of 65.0 to 65.1 (two gateways each, side by side). Under load V8 collects on
// its own and none is added.
import { constants, PerformanceObserver, type PerformanceEntry } from "node:perf_hooks";

// After the young generation's first idle shrink, about 45 s after start.
const CHECK_AFTER_MS = 60_000;

/** One major collection a minute after start, unless V8 ran one; needs node --expose-gc (the Deployment's command). */
export function startMemoryReducer(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) return; // started by hand without the flag: V8 alone
  let collected = false;
  const observer = new PerformanceObserver((list) => {
    if ((list.getEntries() as (PerformanceEntry & { detail?: { kind?: number } })[]).some((entry) => entry.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR)) collected = true;
  });
  observer.observe({ entryTypes: ["gc"] });
  setTimeout(() => {
    observer.disconnect();
    if (!collected) gc(); // 10 to 25 ms for an idle gateway's heap
  }, CHECK_AFTER_MS).unref();
}
