// A tenant's quota, enforced before a call reaches core etcd, so that the shared etcd never
// reaches its space quota (NOSPACE stops every write of the host too) because of a tenant:
// - storage: live bytes under the prefix. A write that would add more than the tenant has left is
//   refused; reads, watches and deletes never are, so a tenant at its quota recovers by deleting.
// - writeBytesPerSecond: bytes of keys and values written, which bound the history a tenant adds
//   between the host's compactions.
// - requestsPerSecond: every unary call and every message on a stream.
// Each of N replicas admits 1/N of each rate, and growth up to 1/N of what is left: replicas need
// no coordination. A call over a rate waits while that takes at most MAX_WAIT_MS (a burst is
// smoothed rather than failed), else it is refused with RESOURCE_EXHAUSTED, as a write over the
// storage quota is; stream messages wait as long as it takes.
//
// Worst-case storage overshoot. One replica never exceeds the quota: its own writes stay reserved
// until its view of the usage has seen them. With N replicas, a replica admits growth only while
// its view holds every write committed more than CURRENT_WITHIN_MS (1 s) ago (usage.ts), so all
// it cannot know is what the other N-1 replicas admitted within that second: each at most a burst
// B = max(W/N, 2 MiB) and then W/N per second, W being writeBytesPerSecond. So the tenant's live
// bytes stay below storage + (N-1) x (B + W/N x 1 s): 2.1 MiB with the defaults and 2 replicas.
// (During a rollout, maxSurge adds one replica with its share for as long as it lasts.)
import { GrpcError, Status } from "../wire/grpc.ts";

/** What the quota needs to know of the tenant's usage (usage.ts keeps it). */
export interface UsageView {
  readonly usedBytes: number;
  /** The revision up to which the view has seen every write. */
  readonly revision: number;
  readonly counting: boolean;
  ensureCurrent(): Promise<boolean>;
  sizeOf(coreKey: Buffer): number;
  onRevision(listener: (revision: number) => void): void;
}

export interface QuotaLimits {
  storageBytes: number;
  writeBytesPerSecond: number;
  requestsPerSecond: number;
  /** Gateway replicas of the tenant: each admits its share. */
  replicas: number;
  /** The largest request message: the write-rate bucket holds at least one, so any write can pass. */
  maxRequestBytes: number;
}

/** The puts a request makes, as core keys and sizes; a Txn's branches apart (one of them runs). */
export interface Writes {
  puts: { key: Buffer; bytes: number; keepsValue: boolean }[];
  txns: { success: Writes; failure: Writes }[];
}

export type Refusal = "storage" | "write_rate" | "request_rate";

/** A write's claim on the storage headroom, held until the usage view has seen it. */
export interface Reservation {
  growth: number;
  /** The revision that made it visible; 0 until the write answered. */
  revision: number;
}

const MAX_WAIT_MS = 1_000;

/** A token bucket that lends: a cost is taken at once and the caller waits until the debt is paid. */
export class TokenBucket {
  private tokens: number;
  private last: number;
  readonly rate: number;
  readonly capacity: number;

  constructor(rate: number, capacity: number, now: number) {
    this.rate = rate;
    this.capacity = capacity;
    this.tokens = capacity;
    this.last = now;
  }

  /** Takes `cost`; returns how long (ms) the caller must wait before going on. */
  take(cost: number, now: number): number {
    this.tokens = Math.min(this.capacity, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
    this.tokens -= cost;
    return this.tokens >= 0 ? 0 : (-this.tokens / this.rate) * 1000;
  }

  giveBack(cost: number): void {
    this.tokens += cost;
  }
}

export class Quota {
  readonly limits: QuotaLimits;
  private readonly usage: UsageView;
  private readonly now: () => number;
  private readonly requests: TokenBucket;
  private readonly writeBytes: TokenBucket;
  private readonly reservations = new Set<Reservation>();
  private reserved = 0;
  private readonly refused: (reason: Refusal) => void;

  constructor(limits: QuotaLimits, usage: UsageView, refused: (reason: Refusal) => void, now: () => number = () => performance.now()) {
    this.limits = limits;
    this.usage = usage;
    this.refused = refused;
    this.now = now;
    const share = (rate: number) => rate / limits.replicas;
    this.requests = new TokenBucket(share(limits.requestsPerSecond), Math.max(1, share(limits.requestsPerSecond)), now());
    this.writeBytes = new TokenBucket(share(limits.writeBytesPerSecond), Math.max(share(limits.writeBytesPerSecond), limits.maxRequestBytes), now());
    usage.onRevision((revision) => this.seen(revision));
  }

  /** One unary call: resolves when it may go on; rejects with RESOURCE_EXHAUSTED. */
  admitCall(): Promise<void> | undefined {
    return this.wait(this.requests, 1, "request_rate", () => this.rateMessage("request", `requestsPerSecond ${this.limits.requestsPerSecond}`));
  }

  /** One message on a stream: how long to hold it (never refused; the stream just slows down). */
  streamDelay(): number {
    return this.requests.take(1, this.now());
  }

  /**
   * A write: checks the storage headroom (reserving the growth) and the write rate. Resolves with
   * the reservation to settle once core etcd answered; rejects with GrpcError.
   */
  async admitWrite(writes: Writes): Promise<Reservation> {
    const growth = Math.max(0, growthOf(writes, (key) => this.usage.sizeOf(key)));
    const bytes = bytesOf(writes);
    const reservation: Reservation = { growth, revision: 0 };
    if (growth > 0) {
      if (!(await this.usage.ensureCurrent())) {
        throw new GrpcError(Status.UNAVAILABLE, this.usage.counting ? "etcdstorage gateway: the tenant's usage is still being counted; retry shortly" : "etcdstorage gateway: the tenant's usage could not be confirmed with core etcd; retry shortly");
      }
      const { storageBytes, replicas } = this.limits;
      const left = storageBytes - this.usage.usedBytes;
      if (this.reserved + growth > left / replicas) {
        this.refused("storage");
        throw new GrpcError(
          Status.RESOURCE_EXHAUSTED,
          `etcdstorage gateway: storage quota exceeded: the tenant uses ${mebibytes(this.usage.usedBytes)} of its ${mebibytes(storageBytes)} quota (spec.quota.storage) and this write adds ${mebibytes(growth)}${replicas > 1 ? ` (each of ${replicas} gateway replicas admits 1/${replicas} of what is left)` : ""}; delete keys to write again`,
        );
      }
      this.reserved += growth;
      this.reservations.add(reservation);
    }
    try {
      await this.wait(this.writeBytes, bytes, "write_rate", () => this.rateMessage("write", `writeBytesPerSecond ${this.limits.writeBytesPerSecond} bytes`));
    } catch (error) {
      this.settle(reservation, 0);
      throw error;
    }
    return reservation;
  }

  /** The write answered: its growth stays reserved until the usage view reaches `revision` (0: it failed). */
  settle(reservation: Reservation, revision: number): void {
    if (!this.reservations.has(reservation)) return;
    if (revision === 0 || revision <= this.usage.revision) this.release(reservation);
    else reservation.revision = revision;
  }

  private seen(revision: number): void {
    for (const reservation of this.reservations) if (reservation.revision !== 0 && reservation.revision <= revision) this.release(reservation);
  }

  private release(reservation: Reservation): void {
    this.reservations.delete(reservation);
    this.reserved -= reservation.growth;
  }

  private wait(bucket: TokenBucket, cost: number, reason: Refusal, message: () => string): Promise<void> | undefined {
    const delay = bucket.take(cost, this.now());
    if (delay === 0) return undefined;
    if (delay > MAX_WAIT_MS) {
      bucket.giveBack(cost);
      this.refused(reason);
      return Promise.reject(new GrpcError(Status.RESOURCE_EXHAUSTED, message()));
    }
    return new Promise((resolve) => setTimeout(resolve, delay));
  }

  private rateMessage(what: string, quota: string): string {
    const { replicas } = this.limits;
    return `etcdstorage gateway: ${what} rate quota exceeded (spec.quota: ${quota} per second${replicas > 1 ? `, 1/${replicas} of it at each of ${replicas} gateway replicas` : ""}); retry later`;
  }
}

/** Bytes a request adds to the tenant's live data, at most: the larger of a Txn's branches. */
export function growthOf(writes: Writes, sizeOf: (key: Buffer) => number): number {
  let growth = 0;
  for (const put of writes.puts) if (!put.keepsValue) growth += put.bytes - sizeOf(put.key);
  for (const txn of writes.txns) growth += Math.max(growthOf(txn.success, sizeOf), growthOf(txn.failure, sizeOf));
  return growth;
}

/** Bytes a request writes, at most. */
export function bytesOf(writes: Writes): number {
  let bytes = 0;
  for (const put of writes.puts) bytes += put.keepsValue ? put.key.length : put.bytes;
  for (const txn of writes.txns) bytes += Math.max(bytesOf(txn.success), bytesOf(txn.failure));
  return bytes;
}

function mebibytes(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${(bytes / (1024 * 1024)).toFixed(1)} MiB` : bytes >= 1024 ? `${(bytes / 1024).toFixed(1)} KiB` : `${bytes} bytes`;
}
