// Issue 10 (operations): what an operator and an API server see of a gateway besides the data.
// Maintenance/Status describes the tenant, not the shared cluster; /metrics counts calls by method
// and status, times them and shows open streams, every series labelled with the tenant; readiness
// waits for the tenant's usage to be counted (tenants.test.ts covers core etcd stopping later);
// SIGTERM ends watches with UNAVAILABLE, fails readiness and refuses new connections while a call
// in flight finishes, then exits 0; the logs are JSON lines without keys or values. Each gateway
// runs from the Deployment the sync hook returned; the ones that are stopped or start against a
// stopped core etcd are extra replicas of the same tenant.
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import protobuf from "protobufjs";
import type { Config } from "../../hooks/config.ts";
import { testConfig } from "../support/requests.ts";
import { connect, encodeRequest, expectGrpcError, GrpcStatus, type EtcdClient } from "../support/etcd-client.ts";
import { grpcFrame, RawCall, rawSession, scrape, tenantClient, valueOf, within } from "./gateway-kit.ts";
import { httpGet, startCoreEtcd, stopAll, tcpAccepts, tempDir, waitFor, type CoreEtcd, type RunningContainer } from "./harness.ts";
import { startProxy, startTenant, type RunningProxy, type RunningTenant } from "./tenant.ts";

const TENANT = "ops";
const PREFIX = `/etcdstorage/${TENANT}/`;
const STORAGE_QUOTA = 64 * 1024 * 1024;
const STATUS = "/etcdserverpb.Maintenance/Status";

/** A field of a protobuf message by number, read with protobufjs: the vendored etcd 3.5 protos lack 3.6's dbSizeQuota. */
function varintField(message: Buffer, field: number): bigint | undefined {
  const reader = protobuf.Reader.create(message);
  let value: bigint | undefined;
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    if (tag >>> 3 === field && (tag & 7) === 0) value = BigInt(reader.uint64().toString());
    else reader.skipType(tag & 7);
  }
  return value;
}

describe("gateway operations: status, metrics, readiness, shutdown and logs", () => {
  let dir: string;
  let core: CoreEtcd;
  let config: Config;
  let tenant: RunningTenant;
  let host: EtcdClient;
  let client: EtcdClient;
  /** Every gateway process of this file, for the log test. */
  const gateways: RunningContainer[] = [];

  before(async () => {
    dir = await tempDir("operations-");
    core = await startCoreEtcd(dir);
    config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
    tenant = await startTenant(config, core, TENANT, { clientCertSecret: [{ name: "etcd-client", namespace: `${TENANT}-system` }], quota: { storage: "64Mi" } }, path.join(dir, TENANT));
    gateways.push(tenant.proxy.gateway);
    host = connect(core.endpoint, core.tls);
    client = await tenantClient(tenant);
  });
  after(async () => {
    client?.close();
    host?.close();
    await stopAll();
  });

  /** Another replica of the tenant's gateway, from the same answer; a view of the tenant through it. */
  const replica = async (name: string, waitReady = true): Promise<{ proxy: RunningProxy; via: RunningTenant }> => {
    const proxy = await startProxy(config, tenant.request, tenant.response, path.join(dir, name), { waitReady });
    gateways.push(proxy.gateway);
    return { proxy, via: { ...tenant, proxy, endpoint: `https://127.0.0.1:${proxy.clientPort}` } };
  };
  const probe = (proxy: RunningProxy, which: "/readyz" | "/livez") => httpGet(`http://127.0.0.1:${proxy.healthPort}${which}`).catch((error: Error) => ({ status: 0, body: error.message }));
  /** The tenant's live bytes as core etcd holds them: its keys (with the prefix) and values. */
  const liveBytes = async () => (await host.kv.range({ key: PREFIX, range_end: `${PREFIX.slice(0, -1)}0` })).kvs.reduce((sum, kv) => sum + kv.key.length + kv.value.length, 0);

  test("Status: core etcd's version, the tenant's own size and quota, the answering member as leader, no raft figures or alarms", async () => {
    await client.kv.put({ key: "/registry/widgets/a", value: "x".repeat(100) });
    const before = await liveBytes();
    await waitFor("Status to count the first key", async () => Number((await client.maintenance.status({})).dbSize) === before);
    await client.kv.put({ key: "/registry/widgets/b", value: "y".repeat(1000) });
    const grown = await liveBytes();
    assert.equal(grown, before + PREFIX.length + "/registry/widgets/b".length + 1000);
    const status = await waitFor("Status to count the second key", async () => {
      const answer = await client.maintenance.status({});
      return Number(answer.dbSize) === grown ? answer : undefined;
    });
    const coreStatus = await host.maintenance.status({});
    assert.equal(status.version, core.release.version);
    assert.equal(status.version, coreStatus.version);
    assert.equal(status.dbSizeInUse, status.dbSize);
    assert.equal(status.leader, status.header!.member_id, "the answering member leads, as far as the tenant can tell");
    assert.equal(status.header!.member_id, coreStatus.header!.member_id);
    assert.deepEqual([status.raftIndex, status.raftTerm, status.raftAppliedIndex, status.isLearner, status.errors], ["0", "0", "0", false, []]);
    assert.notEqual(coreStatus.raftIndex, "0", "core etcd's own figures are there to hide");
    const raw = await client.unary(STATUS, Buffer.alloc(0));
    assert.equal(varintField(raw, 12), BigInt(STORAGE_QUOTA), "dbSizeQuota: the tenant's storage quota");

    // An alarm of the shared cluster is not the tenant's: core etcd reports it, the gateway does not.
    const memberID = coreStatus.header!.member_id;
    await host.maintenance.alarm({ action: "ACTIVATE", memberID, alarm: "NOSPACE" });
    try {
      assert.deepEqual((await host.maintenance.status({})).errors, ["memberID:" + memberID + " alarm:NOSPACE "]);
      assert.deepEqual((await client.maintenance.status({})).errors, []);
    } finally {
      await host.maintenance.alarm({ action: "DEACTIVATE", memberID, alarm: "NOSPACE" });
    }
  });

  test("/metrics: calls by method and gRPC code, their durations, open streams; every series labelled with the tenant", async () => {
    const PUT = "/etcdserverpb.KV/Put";
    const WATCH = "/etcdserverpb.Watch/Watch";
    const before = await scrape(tenant);
    await client.kv.put({ key: "/metrics/a", value: "v" });
    await expectGrpcError(client.kv.put({ key: "", value: "v" }), GrpcStatus.INVALID_ARGUMENT);
    await expectGrpcError(client.kv.compact({ revision: 1 }), GrpcStatus.UNIMPLEMENTED);
    const stranger = await tenantClient(tenant, "none");
    await expectGrpcError(stranger.kv.put({ key: "/metrics/a", value: "v" }), GrpcStatus.UNAUTHENTICATED);
    await expectGrpcError(stranger.unary("/made.Up/Method", Buffer.alloc(0)), GrpcStatus.UNAUTHENTICATED);
    stranger.close();
    const after = await scrape(tenant);
    const moved = (name: string, labels: Record<string, string>) => valueOf(after, name, labels) - valueOf(before, name, labels);
    assert.equal(moved("etcdgateway_calls_total", { method: PUT, code: "OK" }), 1);
    assert.equal(moved("etcdgateway_calls_total", { method: PUT, code: "INVALID_ARGUMENT" }), 1);
    // Methods not served count under one label: a tenant cannot make up series.
    assert.equal(moved("etcdgateway_calls_total", { method: "unimplemented", code: "UNIMPLEMENTED" }), 1);
    // Refused for their certificate, they count too: an API server whose certificate went wrong shows.
    assert.equal(moved("etcdgateway_calls_total", { method: PUT, code: "UNAUTHENTICATED" }), 1);
    assert.equal(moved("etcdgateway_calls_total", { method: "unimplemented", code: "UNAUTHENTICATED" }), 1);
    assert.equal(moved("etcdgateway_call_duration_seconds_count", { method: PUT }), 3);
    assert.ok(moved("etcdgateway_call_duration_seconds_sum", { method: PUT }) > 0);
    const buckets = after.filter((s) => s.name === "etcdgateway_call_duration_seconds_bucket" && s.labels.method === PUT);
    assert.ok(buckets.length > 5, "a histogram's buckets");
    assert.deepEqual(buckets.map((b) => b.value), [...buckets.map((b) => b.value)].sort((x, y) => x - y), "cumulative buckets");
    assert.equal(buckets.find((b) => b.labels.le === "+Inf")?.value, valueOf(after, "etcdgateway_call_duration_seconds_count", { method: PUT }));

    const streams = async () => valueOf(await scrape(tenant), "etcdgateway_open_streams", { method: WATCH });
    const idle = await streams();
    const watch = client.watch();
    watch.create({ key: "/metrics/" });
    assert.equal((await watch.next()).created, true);
    await waitFor("the open watch to show", async () => (await streams()) === idle + 1);
    watch.cancel();
    await waitFor("the closed watch to go", async () => (await streams()) === idle);
    const cancelled = await scrape(tenant);
    assert.equal(valueOf(cancelled, "etcdgateway_calls_total", { method: WATCH, code: "CANCELLED" }) - valueOf(after, "etcdgateway_calls_total", { method: WATCH, code: "CANCELLED" }), 1, "a stream counts as a call when it ends");

    const unlabelled = cancelled.filter((s) => s.labels.tenant !== TENANT).map((s) => s.name);
    assert.deepEqual(unlabelled, [], "every series names the tenant");
    assert.ok(cancelled.some((s) => s.name === "process_resident_memory_bytes"), "the process's own metrics too");
  });

  test("readiness: 503 until the tenant's usage is counted, though the gateway is alive; 200 once counted", async () => {
    await core.stop();
    let started: { proxy: RunningProxy } | undefined;
    try {
      // A replica starting while core etcd is down cannot count: not ready, and says why.
      started = await replica("counting", false);
      const { proxy } = started;
      const counting = await waitFor("the new replica to answer /readyz", async () => {
        const answer = await probe(proxy, "/readyz");
        return answer.status === 0 ? undefined : answer;
      });
      assert.deepEqual(counting, { status: 503, body: "counting the tenant's usage\n" });
      assert.equal((await probe(proxy, "/livez")).status, 200, "alive all the same: nothing to restart");
    } finally {
      await core.start();
    }
    await waitFor("the new replica to count the usage and be ready", async () => (await probe(started.proxy, "/readyz")).status === 200, 20_000, () => started!.proxy.gateway.logs());
    assert.match(started.proxy.gateway.logs(), /"msg":"tenant usage counted"/);
    await waitFor("the first replica to be ready again", async () => (await probe(tenant.proxy, "/readyz")).status === 200);
  });

  test("SIGTERM with the log reader gone (stdout closed): the gateway still exits 0", async () => {
    const { proxy } = await replica("no-log-reader");
    // Whatever reads the container's log went away: every line from now on fails with EPIPE.
    proxy.gateway.process.stdout!.destroy();
    proxy.gateway.process.kill("SIGTERM");
    assert.deepEqual(await within(5_000, "the gateway to exit", proxy.gateway.exited), { code: 0, signal: null });
  });

  test("SIGTERM: watches end UNAVAILABLE, readiness fails, new connections are refused, the call in flight finishes, exit 0", async () => {
    const { proxy, via } = await replica("stopping");
    const watching = await tenantClient(via);
    const session = await rawSession(via);
    try {
      const watch = watching.watch();
      watch.create({ key: "/shutdown/" });
      assert.equal((await watch.next()).created, true);
      // A Put whose message is half sent: in flight from the gateway's side until the rest arrives.
      const body = grpcFrame(encodeRequest("/etcdserverpb.KV/Put", { key: "/shutdown/in-flight", value: "finished after SIGTERM" }));
      const inFlight = new RawCall(session, "/etcdserverpb.KV/Put");
      inFlight.write(body.subarray(0, 10));
      // A PING is answered after the frames before it: the gateway has the call when the answer comes.
      await new Promise<void>((resolve, reject) => session.ping((error) => (error ? reject(error) : resolve())));

      proxy.gateway.process.kill("SIGTERM");
      const ended = await within(5_000, "the watch to end", watch.closed);
      assert.deepEqual([ended?.code, ended?.details], [GrpcStatus.UNAVAILABLE, "etcdstorage gateway: shutting down; reconnect to continue"]);
      assert.deepEqual(await probe(proxy, "/readyz"), { status: 503, body: "shutting down\n" });
      assert.equal(await tcpAccepts(proxy.clientPort), false, "no new connections");
      assert.equal(proxy.gateway.process.exitCode, null, "still running: a call is in flight");

      inFlight.end(body.subarray(10));
      const outcome = await within(5_000, "the call in flight to finish", inFlight.outcome);
      assert.equal(outcome.grpcStatus, GrpcStatus.OK);
      assert.equal((await host.kv.range({ key: `${PREFIX}/shutdown/in-flight` })).kvs[0]?.value.toString(), "finished after SIGTERM");
      assert.deepEqual(await within(15_000, "the gateway to exit", proxy.gateway.exited), { code: 0, signal: null });
      assert.match(proxy.gateway.logs(), /"msg":"stopped"/);
    } finally {
      watching.close();
      session.destroy();
    }
  });

  test("logs: JSON lines naming the tenant, without any key or value a tenant sent", async () => {
    const key = "/registry/secrets/team/zq-key-7f3a9c";
    const value = "zq-value-91c2e4";
    const lease = await client.lease.grant({ TTL: 30 });
    await client.kv.put({ key, value, lease: lease.ID });
    await client.kv.range({ key });
    await client.kv.txn({ compare: [{ key, target: "VALUE", result: "EQUAL", value }], success: [{ request_put: { key, value: `${value}-2`, lease: lease.ID } }] });
    const watch = client.watch();
    watch.create({ key, prev_kv: true });
    await watch.next();
    await client.kv.deleteRange({ key, prev_kv: true });
    await watch.next();
    watch.cancel();
    await client.lease.timeToLive({ ID: lease.ID, keys: true });
    // Refusals carrying them: an oversized key, a malformed message, a method not served.
    await expectGrpcError(client.kv.put({ key: `${key}/${"k".repeat(9000)}`, value }), GrpcStatus.INVALID_ARGUMENT);
    await expectGrpcError(client.unary("/etcdserverpb.KV/Put", Buffer.concat([encodeRequest("/etcdserverpb.KV/Put", { key, value }), Buffer.from([0x80])])), GrpcStatus.INVALID_ARGUMENT);
    await expectGrpcError(client.unary("/etcdserverpb.KV/Compact", encodeRequest("/etcdserverpb.KV/Put", { key, value })), GrpcStatus.UNIMPLEMENTED);

    const secrets = [key, value, "zq-key-7f3a9c", Buffer.from(value).toString("base64"), Buffer.from(value).toString("hex")];
    for (const gateway of gateways) {
      const lines = gateway.logs().split("\n").filter((line) => line !== "");
      assert.ok(lines.length > 0);
      for (const line of lines) {
        let entry: { tenant?: string; msg?: string; level?: number };
        assert.doesNotThrow(() => (entry = JSON.parse(line)), `not JSON: ${line}`);
        assert.equal(entry!.tenant, TENANT, line);
        assert.equal(typeof entry!.msg, "string", line);
        for (const secret of secrets) assert.ok(!line.includes(secret), `a log line carries ${secret}: ${line}`);
      }
    }
  });
});
