// Prometheus metrics of one gateway: calls by method and gRPC code, their latency, open streams,
// what the tenant holds in core etcd and the refusals at those bounds.
// Every series carries the tenant's name.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { STATUS_NAMES } from "../wire/grpc.ts";
import type { Bound } from "../tenant/limits.ts";

export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly calls: Counter<"method" | "code">;
  private readonly latency: Histogram<"method">;
  private readonly streams: Gauge<"method">;
  private readonly refusals: Counter<"reason">;
  private readonly confirmations: Counter<"how">;
  private readonly bounded: Counter<"limit">;

  constructor(tenant: string) {
    this.registry.setDefaultLabels({ tenant });
    collectDefaultMetrics({ register: this.registry });
    this.calls = new Counter({ name: "etcdgateway_calls_total", help: "Tenant calls by gRPC method and status code", labelNames: ["method", "code"], registers: [this.registry] });
    this.latency = new Histogram({
      name: "etcdgateway_call_duration_seconds",
      help: "Time from a tenant call's arrival to its status (streams: their whole life)",
      labelNames: ["method"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [this.registry],
    });
    this.streams = new Gauge({ name: "etcdgateway_open_streams", help: "Open watch and lease keepalive streams", labelNames: ["method"], registers: [this.registry] });
    this.refusals = new Counter({ name: "etcdgateway_quota_refusals_total", help: "Calls refused by the tenant's quota, by reason (storage, write_rate, request_rate)", labelNames: ["reason"], registers: [this.registry] });
    this.confirmations = new Counter({
      name: "etcdgateway_usage_confirmations_total",
      help: "Confirmations that the usage view is current, by how: progress (a watch progress request) or read (a read that sorts every key under the prefix)",
      labelNames: ["how"],
      registers: [this.registry],
    });
    this.bounded = new Counter({
      name: "etcdgateway_limit_refusals_total",
      help: "Streams, watch creates and lease grants refused at this gateway's bounds on what a tenant holds in core etcd, by limit (open_streams, open_watches, leases)",
      labelNames: ["limit"],
      registers: [this.registry],
    });
  }

  /** What the tenant holds in core etcd through this gateway, read when Prometheus scrapes. */
  held(openWatches: () => number, leases: () => number): void {
    this.readOnScrape("etcdgateway_open_watches", "Watches this gateway holds open in core etcd", openWatches);
    this.readOnScrape("etcdgateway_held_leases", "Leases granted or kept alive through this gateway within their TTL", leases);
  }

  limitRefused(limit: Bound): void {
    this.bounded.inc({ limit });
  }

  /** The tenant's usage and quota, read when Prometheus scrapes. */
  storage(usedBytes: () => number, quota: { storageBytes: number; writeBytesPerSecond: number; requestsPerSecond: number }): void {
    this.readOnScrape("etcdgateway_storage_used_bytes", "Live bytes of keys and values under the tenant's prefix, as this gateway sees them", usedBytes);
    const limit = new Gauge({ name: "etcdgateway_quota", help: "The tenant's quota: storage (bytes), write_bytes_per_second, requests_per_second", labelNames: ["resource"], registers: [this.registry] });
    limit.set({ resource: "storage" }, quota.storageBytes);
    limit.set({ resource: "write_bytes_per_second" }, quota.writeBytesPerSecond);
    limit.set({ resource: "requests_per_second" }, quota.requestsPerSecond);
  }

  /** A gauge whose value is read when Prometheus scrapes. */
  private readOnScrape(name: string, help: string, read: () => number): void {
    new Gauge({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.set(read());
      },
    });
  }

  refused(reason: string): void {
    this.refusals.inc({ reason });
  }

  confirmed(how: string): void {
    this.confirmations.inc({ how });
  }

  call(method: string, code: number, seconds: number): void {
    this.calls.inc({ method, code: STATUS_NAMES[code] ?? String(code) });
    this.latency.observe({ method }, seconds);
  }

  streamOpened(method: string): void {
    this.streams.inc({ method });
  }

  streamClosed(method: string): void {
    this.streams.dec({ method });
  }
}
