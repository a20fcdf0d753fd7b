// Bounds, not quotas: what one tenant may send in one call, and what it may hold in core etcd's
// memory through one replica at once (streams, watches, leases, answers being built). They keep a
// tenant from costing the gateway or core etcd more than an API server's honest use does, whatever
// its request rate.
import { GrpcError, Status } from "../wire/grpc.ts";

export interface Limits {
  /** Largest request message: clientv3 sends up to 2 MiB (etcd itself accepts 1.5 MiB by default). */
  maxRequestBytes: number;
  /** Largest answer taken from core etcd for one message (a page of a list). */
  maxResponseBytes: number;
  /**
   * Largest tenant key. etcd keeps every key of every revision in memory (its index), so a tenant's
   * key size is the host's memory; Kubernetes keys are a few hundred bytes.
   */
  maxKeyBytes: number;
  /** Deepest Txn inside Txn: the gateway reads nested transactions recursively. */
  maxTxnDepth: number;
  /**
   * Longest lease TTL granted. Every lease lives in core etcd's memory until it expires: with the
   * request rate, this bounds the leases a tenant can hold. kube-apiserver's objects live at most
   * an hour (--event-ttl), and its lease manager asks for that plus up to 60 s in which it reuses
   * the lease (lease_manager.go): 3660 s. A longer TTL is granted as this one, and the answer says so.
   */
  maxLeaseTtlSeconds: number;
  /**
   * Watches open at once through one gateway replica, on all its streams. Each is a watcher in core
   * etcd's memory until it is cancelled (bench/core-memory.ts: 100,000 took 83 MiB), so watches
   * created at the request rate and never cancelled would grow the host's etcd without bound.
   * kube-apiserver's watch cache opens about one per resource it serves.
   */
  maxOpenWatches: number;
  /**
   * Leases one gateway replica vouches for at once: granted or kept alive through it within their
   * TTL (leases.ts, HeldLeases). Each lives in core etcd's memory (bench/core-memory.ts: 100,000
   * took 127 MiB), and leases granted at the request rate and kept alive would otherwise reach
   * millions. kube-apiserver reuses a lease for a minute per TTL: tens of leases.
   */
  maxLeases: number;
  /**
   * Streams (Watch, LeaseKeepAlive) open at once through one gateway replica, over all its
   * connections. Each is a stream to core etcd, which holds memory for it even with no watch on it
   * (bench/core-memory.ts: 10,000 empty Watch streams took 410 MiB). etcd's client shares one
   * stream among the watches that carry the same metadata: kube-apiserver opens a few.
   */
  maxOpenStreams: number;
  /** Bytes that reads may make core etcd build in memory at once, through one replica (reads.ts). */
  maxReadBytesInFlight: number;
}

/** The per-replica bounds that refuse (the read budget only delays). */
export type Bound = "open_streams" | "open_watches" | "leases";

export const DEFAULT_LIMITS: Limits = {
  maxRequestBytes: 2 * 1024 * 1024,
  maxResponseBytes: 64 * 1024 * 1024,
  maxKeyBytes: 8 * 1024,
  maxTxnDepth: 8,
  maxLeaseTtlSeconds: 3660,
  maxOpenWatches: 10_000,
  maxLeases: 10_000,
  maxOpenStreams: 1_000,
  maxReadBytesInFlight: 64 * 1024 * 1024,
};

export function checkKeySize(limits: Limits, key: Uint8Array, what: string): void {
  if (key.length > limits.maxKeyBytes) {
    throw new GrpcError(Status.INVALID_ARGUMENT, `etcdstorage gateway: ${what} of ${key.length} bytes exceeds the limit of ${limits.maxKeyBytes} bytes for a key`);
  }
}

export function checkTxnDepth(limits: Limits, depth: number): void {
  if (depth > limits.maxTxnDepth) throw new GrpcError(Status.INVALID_ARGUMENT, `etcdstorage gateway: transactions nested deeper than ${limits.maxTxnDepth} levels are refused`);
}
