// Which leases are the tenant's, and how many one replica vouches for. etcd's lease IDs are global
// to the cluster and its own IDs are sequential, so the gateway grants every lease of a tenant
// under an ID it chooses (LeaseScope): 31 bits hashed from the tenant's prefix (its tag) and 32
// random bits; a foreign ID becomes the tenant's never-granted "absent" ID. HeldLeases bounds what
// a tenant holds in core etcd's memory through one replica (limits.maxLeases). The Lease API that
// uses both is api/lease.ts.
import { createHash, randomInt } from "node:crypto";

const RANDOM_BITS = 32n;
const RANDOM_RANGE = 2 ** 32;

export class LeaseScope {
  /** The tenant's tag: the high 31 bits of each of its lease IDs (so IDs stay positive). */
  readonly tag: bigint;
  /** A lease ID of the tenant's that is never granted: what foreign IDs become. */
  readonly absent: bigint;

  constructor(prefix: string) {
    const tag = BigInt(createHash("sha256").update(prefix).digest().readUInt32BE(0) & 0x7fffffff);
    this.tag = tag === 0n ? 1n : tag;
    this.absent = this.tag << RANDOM_BITS;
  }

  /** A fresh ID for a grant: the tag and 32 random bits, never the absent ID. */
  newId(): bigint {
    return this.absent | BigInt(randomInt(1, RANDOM_RANGE));
  }

  /** The ID to send for a lease the tenant names: its own, or the absent one. */
  confine(id: bigint): bigint {
    return id >> RANDOM_BITS === this.tag && id !== this.absent ? id : this.absent;
  }

  /** The ID of a Put's lease field: 0 (no lease) stays 0. */
  confineAttached(id: bigint): bigint {
    return id === 0n ? 0n : this.confine(id);
  }
}

/**
 * The leases this replica vouches for: granted or kept alive through it, until their TTL ran out
 * since then, or they were revoked through it. A lease that lives was granted or kept alive
 * through some replica within its TTL, so every live lease of the tenant is counted by at least
 * one replica: with each at most limits.maxLeases, the tenant holds at most replicas x maxLeases
 * in core etcd (and the grants in flight when the bound was reached).
 */
export class HeldLeases {
  private readonly expiry = new Map<bigint, number>();
  private readonly now: () => number;
  private sweptAt = -Infinity;

  constructor(now: () => number = () => performance.now()) {
    this.now = now;
  }

  /** How many; those past their TTL go at most a second late (a sweep is a pass over all). */
  get size(): number {
    const now = this.now();
    if (now - this.sweptAt >= SWEEP_MS) {
      this.sweptAt = now;
      for (const [id, until] of this.expiry) if (until <= now) this.expiry.delete(id);
    }
    return this.expiry.size;
  }

  /** Granted or kept alive with `ttlSeconds` left; 0 left: it no longer exists. */
  hold(id: bigint, ttlSeconds: number): void {
    if (ttlSeconds > 0) this.expiry.set(id, this.now() + ttlSeconds * 1000);
    else this.expiry.delete(id);
  }

  release(id: bigint): void {
    this.expiry.delete(id);
  }
}

const SWEEP_MS = 1_000;
