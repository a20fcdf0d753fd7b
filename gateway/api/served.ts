// What a tenant may call, and nothing else: the calls kube-apiserver's etcd3 storage makes
// (KV, Watch, LeaseGrant, Maintenance/Status), plus the lease calls that concern only the
// tenant's own leases. Every other method, including any etcd adds later, answers UNIMPLEMENTED,
// which is what makes clients fall back (kube-apiserver 1.37's KV/RangeStream falls back to Range).
import { deleteRange, put, range, txn } from "./kv.ts";
import { leaseGrant, leaseKeepAlive, leaseRevoke, leaseTimeToLive } from "./lease.ts";
import { status } from "./maintenance.ts";
import type { Method } from "../calls/method.ts";
import { watch } from "./watch.ts";

export const SERVED_METHODS: ReadonlyMap<string, Method> = new Map<string, Method>([
  ["/etcdserverpb.KV/Range", range],
  ["/etcdserverpb.KV/Put", put],
  ["/etcdserverpb.KV/DeleteRange", deleteRange],
  ["/etcdserverpb.KV/Txn", txn],
  ["/etcdserverpb.Watch/Watch", watch],
  ["/etcdserverpb.Lease/LeaseGrant", leaseGrant],
  ["/etcdserverpb.Lease/LeaseRevoke", leaseRevoke],
  ["/etcdserverpb.Lease/LeaseKeepAlive", leaseKeepAlive],
  ["/etcdserverpb.Lease/LeaseTimeToLive", leaseTimeToLive],
  ["/etcdserverpb.Maintenance/Status", status],
]);
