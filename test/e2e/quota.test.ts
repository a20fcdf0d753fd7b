// Issue 11: no tenant can take the shared etcd down. Core etcd runs with a small space quota
// (--quota-backend-bytes, 32 MiB: NOSPACE there would stop the host's writes too); tenants write
// through gateways started from the returned Deployments with their spec.quota.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import https from "node:https";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { connect, EtcdGrpcError, GrpcStatus, type EtcdClient } from "../support/etcd-client.ts";
import { testConfig } from "../support/requests.ts";
import { scrape, valueOf } from "./gateway-kit.ts";
import { startCoreEtcd, stopAll, tempDir, waitFor, type CoreEtcd } from "./harness.ts";
import { startProxy, startTenant, type RunningTenant } from "./tenant.ts";

const MiB = 1024 * 1024;
const KiB = 1024;
// The gateway's write-rate bucket holds at least its largest request, so any write can pass once.
const LARGEST_REQUEST = 2 * MiB;
// A call waits for the rate at most this long before it is refused (gateway/tenant/quota.ts).
const MAX_WAIT_S = 1;
const VALUE = Buffer.alloc(64 * KiB, "q");
// Watches one gateway replica holds open in core etcd at most, and leases it vouches for (gateway/tenant/limits.ts).
const MAX_OPEN_WATCHES = 10_000;
const MAX_LEASES = 10_000;
const MAX_OPEN_STREAMS = 1_000;

async function clientOf(tenant: RunningTenant, endpoint = tenant.endpoint): Promise<EtcdClient> {
  const [ca, cert, key] = await Promise.all([tenant.credentials.cacert, tenant.credentials.cert, tenant.credentials.key].map((file) => readFile(file)));
  return connect(endpoint, { ca: ca!, cert: cert!, key: key!, servername: "localhost" });
}

/** The tenant's live bytes as core etcd holds them: keys (prefix included) and values. */
async function liveBytes(core: EtcdClient, prefix: string): Promise<number> {
  const { kvs } = await core.kv.range({ key: prefix, range_end: Buffer.concat([Buffer.from(prefix.slice(0, -1)), Buffer.from("0")]) });
  return kvs.reduce((sum, kv) => sum + kv.key.length + kv.value.length, 0);
}

/** Core etcd's Prometheus metrics, read with the host's credentials. */
function coreMetrics(core: CoreEtcd): Promise<string> {
  return new Promise((resolve, reject) => {
    https
      .get(`${core.endpoint}/metrics`, { ...core.tls, agent: false }, (response) => {
        let body = "";
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => (body += chunk));
        response.on("end", () => resolve(body));
      })
      .on("error", reject);
  });
}

const refusal = async (call: Promise<unknown>) => {
  try {
    await call;
    return undefined;
  } catch (error) {
    if (error instanceof EtcdGrpcError) return error;
    throw error;
  }
};

/** Puts 64 KiB values under fresh keys through each client at once until every one is refused. */
async function fill(clients: EtcdClient[], tag: string): Promise<EtcdGrpcError[]> {
  let next = 0;
  const refused: EtcdGrpcError[] = [];
  await Promise.all(
    clients.flatMap((client) =>
      Array.from({ length: 4 }, async () => {
        for (;;) {
          const error = await refusal(client.kv.put({ key: `/registry/fill/${tag}-${next++}`, value: VALUE }));
          if (!error) continue;
          if (error.code === GrpcStatus.RESOURCE_EXHAUSTED && /storage quota/.test(error.details)) {
            refused.push(error);
            return;
          }
          if (error.code !== GrpcStatus.RESOURCE_EXHAUSTED) throw error;
        }
      }),
    ),
  );
  return refused;
}

describe("per-tenant quota on a core etcd with a 32 MiB space quota", () => {
  let dir: string;
  let core: CoreEtcd;
  let host: EtcdClient;
  let config: ReturnType<typeof testConfig>;
  const clients: EtcdClient[] = [];

  before(async () => {
    dir = await tempDir("quota-");
    core = await startCoreEtcd(dir, { extraFlags: [`--quota-backend-bytes=${32 * MiB}`] });
    host = connect(core.endpoint, core.tls);
    config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
  });
  after(async () => {
    for (const client of [host, ...clients]) client?.close();
    await stopAll();
  });

  const tenant = async (name: string, spec: Record<string, unknown>) => {
    const started = await startTenant(config, core, name, { clientCertSecret: [{ name: "etcd-client", namespace: `${name}-system` }], replicas: 1, ...spec }, path.join(dir, name));
    const client = await clientOf(started);
    clients.push(client);
    return { tenant: started, client };
  };
  const noAlarm = async () => assert.deepEqual((await host.maintenance.alarm({ action: "GET", memberID: 0, alarm: "NONE" })).alarms, []);

  test("a tenant that fills its storage quota is refused by name, and recovers by deleting; the host never notices", async () => {
    const { client } = await tenant("full", { quota: { storage: "4Mi", writeBytesPerSecond: "16Mi", requestsPerSecond: 100000 } });
    const [refused] = await fill([client], "full");
    assert.match(refused!.details, /^etcdstorage gateway: storage quota exceeded: the tenant uses [\d.]+ MiB of its 4\.0 MiB quota \(spec\.quota\.storage\) and this write adds 64\.\d KiB; delete keys to write again$/);
    const used = await liveBytes(host, "/etcdstorage/full/");
    assert.ok(used <= 4 * MiB, `one replica never exceeds the quota (${used} bytes stored)`);
    assert.ok(used > 4 * MiB - 2 * VALUE.length, `the quota is used up to the last write that fits (${used} bytes)`);

    // The host writes on, and core etcd raised no alarm.
    await host.kv.put({ key: "/registry/pods/default/host-pod", value: "host" });
    await noAlarm();

    // At the quota: reads and watches work, a delete works, and then writes do again.
    assert.equal((await client.kv.range({ key: "/registry/fill/full-0" })).kvs[0]!.value.length, VALUE.length);
    const watch = client.watch();
    watch.create({ key: "/registry/fill/", range_end: "/registry/fill0" });
    assert.equal((await watch.next()).created, true);
    const deleted = await client.kv.deleteRange({ key: "/registry/fill/full-0" });
    assert.equal(deleted.deleted, "1");
    assert.equal((await watch.next()).events[0]!.type, "DELETE");
    watch.cancel();
    await client.kv.put({ key: "/registry/fill/after-delete", value: VALUE });
    assert.ok((await liveBytes(host, "/etcdstorage/full/")) <= 4 * MiB);
  });

  test("a rewrite storm on one key is held to writeBytesPerSecond, and another tenant is unaffected", async () => {
    const rate = 256 * KiB;
    const { client: storm } = await tenant("storm", { quota: { storage: "64Mi", writeBytesPerSecond: "256Ki", requestsPerSecond: 100000 } });
    const { client: other, tenant: otherTenant } = await tenant("other", {});
    const seconds = 4;
    let accepted = 0;
    let refusedForRate = 0;
    const deadline = Date.now() + seconds * 1000;
    const otherLatencies: number[] = [];
    await Promise.all([
      ...Array.from({ length: 8 }, async () => {
        while (Date.now() < deadline) {
          const error = await refusal(storm.kv.put({ key: "/registry/storm/one", value: VALUE }));
          if (!error) accepted += VALUE.length + "/etcdstorage/storm//registry/storm/one".length;
          else if (error.code === GrpcStatus.RESOURCE_EXHAUSTED && /write rate quota/.test(error.details)) refusedForRate++;
          else throw error;
        }
      }),
      (async () => {
        for (let i = 0; Date.now() < deadline; i++) {
          const started = performance.now();
          await other.kv.put({ key: `/registry/other/${i % 10}`, value: `v${i}` });
          await other.kv.range({ key: `/registry/other/${i % 10}` });
          otherLatencies.push(performance.now() - started);
        }
      })(),
    ]);
    // What one replica can accept in a fixed time: its burst, then the rate, plus the calls that
    // were admitted to wait at most a second past the end (and 0.1 s for the calls on the way).
    const bound = Math.max(rate, LARGEST_REQUEST) + rate * (seconds + MAX_WAIT_S + 0.1);
    assert.ok(accepted <= bound, `${accepted} bytes accepted in ${seconds} s, at most ${bound}`);
    assert.ok(accepted >= rate * seconds * 0.5, `the storm still gets its rate (${accepted} bytes in ${seconds} s)`);
    assert.ok(refusedForRate > 0, "writes beyond the rate were refused");
    otherLatencies.sort((a, b) => a - b);
    assert.ok(otherLatencies.length >= 20, `the other tenant kept working (${otherLatencies.length} rounds)`);
    assert.ok(otherLatencies[Math.floor(otherLatencies.length * 0.9)]! < 1000, `the other tenant's calls were not held (p90 ${otherLatencies[Math.floor(otherLatencies.length * 0.9)]} ms)`);
    // Writing for 4 s, the other tenant's usage view was confirmed several times, on etcd 3.5.16 by
    // progress requests (which cost etcd nothing per key), not by the read that sorts every key.
    const samples = await scrape(otherTenant);
    const confirmations = (how: string) => valueOf(samples, "etcdgateway_usage_confirmations_total", { how });
    assert.ok(confirmations("progress") >= 3, `confirmed by progress requests ${confirmations("progress")} times, by reads ${confirmations("read")} times`);
    assert.ok(confirmations("read") <= 1, `by reads only when the watch had just started: ${confirmations("read")}`);
    await noAlarm();
  });

  test("a write whose caller gave up while it waited for the write rate is never sent", async () => {
    const { client } = await tenant("gaveup", { quota: { storage: "64Mi", writeBytesPerSecond: "256Ki", requestsPerSecond: 100000 } });
    // The write-rate bucket holds one largest request: these writes take all of it but 100 KiB
    // (two, as core etcd takes at most 1.5 MiB at once) ...
    for (const [i, size] of [1024 * KiB, LARGEST_REQUEST - 1124 * KiB].entries()) await client.kv.put({ key: `/registry/big-${i}`, value: Buffer.alloc(size, "b") });
    // ... so this one waits about 0.75 s for the rate, and its caller gives up after 0.2 s.
    const error = await refusal(client.kv.put({ key: "/registry/abandoned", value: Buffer.alloc(300 * KiB, "a") }, { timeoutMs: 200 }));
    assert.equal(error?.code, GrpcStatus.DEADLINE_EXCEEDED);
    // The bucket lends in order: this write's wait ends about 0.25 s after the abandoned one's.
    await client.kv.put({ key: "/registry/after", value: Buffer.alloc(64 * KiB, "c") });
    assert.equal((await host.kv.range({ key: "/etcdstorage/gaveup//registry/after" })).kvs.length, 1);
    assert.equal((await host.kv.range({ key: "/etcdstorage/gaveup//registry/abandoned" })).kvs.length, 0, "the abandoned write reached core etcd");
  });

  test("a gateway holds at most 10,000 of its tenant's watches open in core etcd; past that a create is refused as etcd refuses one, and a cancel or an ended stream makes room", async () => {
    const { tenant: started, client } = await tenant("watches", { quota: { storage: "4Mi", writeBytesPerSecond: "256Ki", requestsPerSecond: 100000 } });
    const coreWatchers = async () => Number(/^etcd_debugging_mvcc_watcher_total (\d+)$/m.exec(await coreMetrics(core))![1]);
    const before = await coreWatchers();
    const first = client.watch();
    const created: string[] = [];
    const canceled: string[] = [];
    first.onResponse((answer) => (answer.created ? created : canceled).push(answer.watch_id));
    for (let i = 0; i < MAX_OPEN_WATCHES; i++) first.create({ key: `/registry/widgets/w-${i}` });
    await waitFor(`${MAX_OPEN_WATCHES} watches created`, async () => created.length === MAX_OPEN_WATCHES, 30_000);
    assert.equal((await coreWatchers()) - before, MAX_OPEN_WATCHES);

    const second = client.watch();
    second.create({ key: "/registry/widgets/one-more" });
    const refused = await second.next();
    assert.deepEqual([refused.watch_id, refused.created, refused.canceled], ["-1", true, true]);
    assert.match(refused.cancel_reason, /^etcdstorage gateway: too many open watches: this gateway replica holds 10000, its limit/);
    assert.equal((await coreWatchers()) - before, MAX_OPEN_WATCHES, "the refused create never reached core etcd");
    // etcd's own Go client (etcdctl) takes the refusal as that watch's error, and ends.
    const byEtcdctl = await started.etcdctl(["watch", "/registry/widgets/by-etcdctl"]);
    assert.notEqual(byEtcdctl.code, 0);
    assert.match(byEtcdctl.stderr, /too many open watches/);
    const samples = await scrape(started);
    assert.deepEqual([valueOf(samples, "etcdgateway_open_watches"), valueOf(samples, "etcdgateway_limit_refusals_total", { limit: "open_watches" })], [MAX_OPEN_WATCHES, 2]);

    first.cancelWatch(created[0]!);
    await waitFor("the cancel's answer", async () => canceled.includes(created[0]!));
    second.create({ key: "/registry/widgets/after-a-cancel" });
    const accepted = await second.next();
    assert.deepEqual([accepted.created, accepted.canceled], [true, false], "a cancel made room");

    first.cancel();
    await waitFor("core etcd to drop the ended stream's watchers", async () => (await coreWatchers()) - before === 1);
    second.create({ key: "/registry/widgets/after-the-end" });
    assert.deepEqual([(await second.next()).canceled], [false], "an ended stream made room");
    second.cancel();
  });

  test("a gateway vouches for at most 10,000 of its tenant's leases in core etcd; past that a grant is refused by name, and a revoke makes room", async () => {
    const { tenant: started, client } = await tenant("leases", { quota: { storage: "4Mi", writeBytesPerSecond: "256Ki", requestsPerSecond: 100000 } });
    const coreLeases = async () => (await host.lease.leases({})).leases.length;
    const before = await coreLeases();
    const granted: string[] = [];
    let asked = 0;
    await Promise.all(
      Array.from({ length: 50 }, async () => {
        while (asked++ < MAX_LEASES) granted.push((await client.lease.grant({ TTL: 600 })).ID);
      }),
    );
    assert.equal(granted.length, MAX_LEASES);
    const refused = await refusal(client.lease.grant({ TTL: 600 }));
    assert.equal(refused?.code, GrpcStatus.RESOURCE_EXHAUSTED);
    assert.match(refused!.details, /^etcdstorage gateway: too many leases: this gateway replica holds 10000, its limit/);
    assert.equal((await coreLeases()) - before, MAX_LEASES, "the refused grant never reached core etcd");
    const byEtcdctl = await started.etcdctl(["lease", "grant", "600"]);
    assert.deepEqual([byEtcdctl.code !== 0, /too many leases/.test(byEtcdctl.stderr)], [true, true], `etcdctl: ${byEtcdctl.stderr}`);
    const samples = await scrape(started);
    assert.deepEqual([valueOf(samples, "etcdgateway_held_leases"), valueOf(samples, "etcdgateway_limit_refusals_total", { limit: "leases" })], [MAX_LEASES, 2]);
    await client.lease.revoke({ ID: granted[0]! });
    await client.lease.grant({ TTL: 600 });
    assert.equal((await coreLeases()) - before, MAX_LEASES);
  });

  test("a gateway holds at most 1,000 of its tenant's streams open to core etcd, over all connections; past that a stream is refused by name, and an ended one makes room", async () => {
    const { tenant: started, client } = await tenant("streams", { quota: { storage: "4Mi", writeBytesPerSecond: "256Ki", requestsPerSecond: 100000 } });
    const second = await clientOf(started);
    clients.push(second);
    /** A stream with one watch on it, and the answer to its create (none: the stream ended). */
    const opened = async (on: EtcdClient) => {
      const stream = on.watch();
      stream.create({ key: "/registry/widgets/one" });
      const answer = await stream.next().catch(() => undefined);
      return { stream, answer };
    };
    const held = await Promise.all(Array.from({ length: MAX_OPEN_STREAMS }, () => opened(client)));
    assert.ok(held.every(({ answer }) => answer?.created && !answer.canceled), "every stream open, with its watch");

    const extra = await opened(second);
    assert.equal(extra.answer, undefined, "one more, from another connection, is not served");
    const ended = await extra.stream.closed;
    assert.equal(ended?.code, GrpcStatus.RESOURCE_EXHAUSTED, "one more, from another connection");
    assert.match(ended!.details, /^etcdstorage gateway: too many open streams: this gateway replica holds 1000, its limit/);
    const byEtcdctl = await started.etcdctl(["watch", "/registry/widgets/by-etcdctl"]);
    assert.deepEqual([byEtcdctl.code !== 0, /too many open streams/.test(byEtcdctl.stderr)], [true, true], `etcdctl: ${byEtcdctl.stderr}`);
    assert.equal(valueOf(await scrape(started), "etcdgateway_limit_refusals_total", { limit: "open_streams" }), 2);

    held[0]!.stream.cancel();
    await waitFor("room for a stream once one ended", async () => {
      const again = await opened(second);
      const accepted = again.answer?.created === true;
      if (accepted) again.stream.cancel();
      return accepted;
    });
    for (const { stream } of held) stream.cancel();
  });

  test("two replicas of one tenant together stay within the documented overshoot", async () => {
    // storage + (replicas - 1) x (max(W/N, 2 MiB) + W/N x 1 s), gateway/tenant/quota.ts
    const quota = 4 * MiB;
    const rate = 1 * MiB;
    const overshoot = Math.max(rate / 2, LARGEST_REQUEST) + (rate / 2) * 1;
    const { tenant: first, client: one } = await tenant("pair", { replicas: 2, quota: { storage: "4Mi", writeBytesPerSecond: "1Mi", requestsPerSecond: 100000 } });
    const second = await startProxy(config, first.request, first.response, path.join(dir, "pair-2"));
    const two = await clientOf(first, `https://127.0.0.1:${second.clientPort}`);
    clients.push(two);
    const refused = await fill([one, two], "pair");
    assert.equal(refused.length, 8, "every writer on both replicas was refused in the end");
    const used = await liveBytes(host, "/etcdstorage/pair/");
    assert.ok(used <= quota + overshoot, `${used} bytes stored; at most ${quota + overshoot} (quota ${quota} + overshoot ${overshoot})`);
    assert.ok(used > quota / 2, `both replicas wrote up to their shares (${used} bytes)`);
    await noAlarm();
  });
});
