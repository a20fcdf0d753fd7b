// Prometheus metrics of one gateway: calls by method and gRPC code, their latency, open streams,
// what the tenant holds in core etcd and the refusals at those bounds, and the process's own
// (process-metrics.ts). Every series carries the tenant's name.
//
// The text exposition is written here, by hand: prom-client, which wrote the same names, types and
// labels before, took 7 MiB of every idle gateway's memory (README: Sizing), for a dozen series.
import { STATUS_NAMES } from "../wire/grpc.ts";
import type { Bound } from "../tenant/limits.ts";
import { escapeLabel, Exposition, Histogram } from "./exposition.ts";
import { processMetrics } from "./process-metrics.ts";

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** A counter or gauge by one label: a value per label value. */
class ByLabel {
  private readonly values = new Map<string, number>();
  private readonly label: string;

  constructor(label: string) {
    this.label = label;
  }

  add(value: string, by: number): void {
    this.values.set(value, (this.values.get(value) ?? 0) + by);
  }

  set(value: string, to: number): void {
    this.values.set(value, to);
  }

  write(out: Exposition, name: string): void {
    for (const [value, count] of this.values) out.sample(name, `${this.label}="${escapeLabel(value)}"`, count);
  }
}

export class GatewayMetrics {
  private readonly tenant: string;
  /** By method, then by gRPC code name. */
  private readonly calls = new Map<string, Map<string, number>>();
  private readonly latency = new Map<string, Histogram>();
  private readonly streams = new ByLabel("method");
  private readonly refusals = new ByLabel("reason");
  private readonly confirmations = new ByLabel("how");
  private readonly bounded = new ByLabel("limit");
  private readonly quotas = new ByLabel("resource");
  private readonly gauges: { name: string; help: string; read: () => number }[] = [];
  private readonly process = processMetrics();

  constructor(tenant: string) {
    this.tenant = tenant;
  }

  /** What the tenant holds in core etcd through this gateway, read when Prometheus scrapes. */
  held(openWatches: () => number, leases: () => number): void {
    this.gauges.push({ name: "etcdgateway_open_watches", help: "Watches this gateway holds open in core etcd", read: openWatches });
    this.gauges.push({ name: "etcdgateway_held_leases", help: "Leases granted or kept alive through this gateway within their TTL", read: leases });
  }

  limitRefused(limit: Bound): void {
    this.bounded.add(limit, 1);
  }

  /** The tenant's usage and quota, read when Prometheus scrapes. */
  storage(usedBytes: () => number, quota: { storageBytes: number; writeBytesPerSecond: number; requestsPerSecond: number }): void {
    this.gauges.push({ name: "etcdgateway_storage_used_bytes", help: "Live bytes of keys and values under the tenant's prefix, as this gateway sees them", read: usedBytes });
    this.quotas.set("storage", quota.storageBytes);
    this.quotas.set("write_bytes_per_second", quota.writeBytesPerSecond);
    this.quotas.set("requests_per_second", quota.requestsPerSecond);
  }

  refused(reason: string): void {
    this.refusals.add(reason, 1);
  }

  confirmed(how: string): void {
    this.confirmations.add(how, 1);
  }

  call(method: string, code: number, seconds: number): void {
    let byCode = this.calls.get(method);
    if (byCode === undefined) this.calls.set(method, (byCode = new Map()));
    const name = STATUS_NAMES[code] ?? String(code);
    byCode.set(name, (byCode.get(name) ?? 0) + 1);
    let histogram = this.latency.get(method);
    if (histogram === undefined) this.latency.set(method, (histogram = new Histogram(LATENCY_BUCKETS)));
    histogram.observe(seconds);
  }

  streamOpened(method: string): void {
    this.streams.add(method, 1);
  }

  streamClosed(method: string): void {
    this.streams.add(method, -1);
  }

  /** Every series, in Prometheus's text format (CONTENT_TYPE). */
  async exposition(): Promise<string> {
    const out = new Exposition(this.tenant);
    await this.process.write(out);
    out.family("etcdgateway_calls_total", "counter", "Tenant calls by gRPC method and status code");
    for (const [method, byCode] of this.calls) {
      for (const [code, count] of byCode) out.sample("etcdgateway_calls_total", `method="${escapeLabel(method)}",code="${code}"`, count);
    }
    out.family("etcdgateway_call_duration_seconds", "histogram", "Time from a tenant call's arrival to its status (streams: their whole life)");
    for (const [method, histogram] of this.latency) histogram.write(out, "etcdgateway_call_duration_seconds", `method="${escapeLabel(method)}"`);
    out.family("etcdgateway_open_streams", "gauge", "Open watch and lease keepalive streams");
    this.streams.write(out, "etcdgateway_open_streams");
    out.family("etcdgateway_quota_refusals_total", "counter", "Calls refused by the tenant's quota, by reason (storage, write_rate, request_rate)");
    this.refusals.write(out, "etcdgateway_quota_refusals_total");
    out.family("etcdgateway_usage_confirmations_total", "counter", "Confirmations that the usage view is current, by how: progress (a watch progress request) or read (a read that sorts every key under the prefix)");
    this.confirmations.write(out, "etcdgateway_usage_confirmations_total");
    out.family("etcdgateway_limit_refusals_total", "counter", "Streams, watch creates and lease grants refused at this gateway's bounds on what a tenant holds in core etcd, by limit (open_streams, open_watches, leases)");
    this.bounded.write(out, "etcdgateway_limit_refusals_total");
    for (const { name, help, read } of this.gauges) {
      out.family(name, "gauge", help);
      out.sample(name, "", read());
    }
    out.family("etcdgateway_quota", "gauge", "The tenant's quota: storage (bytes), write_bytes_per_second, requests_per_second");
    this.quotas.write(out, "etcdgateway_quota");
    return out.text();
  }
}
