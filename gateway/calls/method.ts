// What a served method is, as calls/proxy.ts carries it and api/ defines each: how a unary call's
// request and answer are translated, how a stream's messages are, and the context every call gets
// (the tenant's keyspace and leases, the limits, what the replica holds).
import type { KEYED_REQUESTS, TenantKeyspace } from "../keys.ts";
import type { HeldLeases, LeaseScope } from "../tenant/leases.ts";
import type { Bound, Limits } from "../tenant/limits.ts";
import type { Writes } from "../tenant/quota.ts";
import type { StoredData } from "../tenant/reads.ts";

export interface CallContext {
  keyspace: TenantKeyspace;
  leases: LeaseScope;
  limits: Limits;
  /** Watches this gateway holds open in core etcd, on all streams (against limits.maxOpenWatches). */
  openWatches: { count: number };
  /** Leases granted or kept alive through this gateway within their TTL (against limits.maxLeases). */
  heldLeases: HeldLeases;
  /** Called with each refusal at one of the per-replica bounds (for metrics). */
  boundReached(bound: Bound): void;
  /** What Status reports as the database, and what reads.ts estimates answers from (tenant/reads.ts): the tenant's own data. */
  storage: StoredData & { quotaBytes(): number };
}

type KeyFields = (typeof KEYED_REQUESTS)[keyof typeof KEYED_REQUESTS];

export interface UnaryMethod<State> {
  kind: "unary";
  /** Where the outgoing request's keys are, for the confinement check; absent: it has none. */
  keyed?: KeyFields;
  /** Whether a call may be sent again when core etcd's connection failed before it answered. */
  idempotent: boolean;
  /** The core request (a gRPC frame) for the tenant's, and the puts it makes; throws GrpcError or MalformedMessage. */
  request(message: Buffer, ctx: CallContext): { framed: Buffer; state: State; writes?: Writes };
  /** The tenant's answer (a gRPC frame) for core etcd's. */
  response(message: Buffer, ctx: CallContext, state: State): Buffer;
  /** What core etcd may build in memory to answer the outgoing request (tenant/reads.ts); absent: little. */
  answerBytes?(framed: Buffer, ctx: CallContext): number;
  /** Whether a failed call is tried again with a new request. */
  retry?(code: number, message: string): boolean;
}

export interface StreamTranslator {
  /** The core request for one tenant message, or undefined to send nothing. */
  request(message: Buffer): Buffer | undefined;
  /** Translates one core answer, handing the tenant's answers to `reply`. */
  response(message: Buffer): void;
  /** The stream ended. */
  close?(): void;
}

export interface StreamMethod {
  kind: "stream";
  keyed?: KeyFields;
  /** `reply` sends one answer (a gRPC frame) to the tenant, after those before it. */
  open(ctx: CallContext, reply: (framed: Buffer) => void): StreamTranslator;
}

// Loosely typed on purpose: each method's state type stays its own.
export type Method = UnaryMethod<any> | StreamMethod;
