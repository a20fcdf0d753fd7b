// Issue 10 (faults): one tenant gateway over a 3-member core cluster, every member in its
// --endpoints, while an API server's traffic goes on through it: creates every few milliseconds
// and a watch on them. The member the gateway talks to is stopped, or killed, and started again,
// or frozen and thawed;
// then it loses its quorum (WithRequireLeader must reach it); then every member goes down and
// comes back. The client side does what clientv3 and kube-apiserver
// do: an UNAVAILABLE (or timed-out) create is sent again, a watch that ends is opened again from
// the revision after the last event it saw.
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { connect, EtcdGrpcError, expectGrpcError, GrpcStatus, type EtcdClient, type WatchStream } from "../support/etcd-client.ts";
import { get, optimisticPut, prefixRangeEnd } from "../support/kubernetes-client.ts";
import { testConfig } from "../support/requests.ts";
import { httpGet, startCoreCluster, stopAll, tempDir, waitFor, type CoreCluster, type EtcdMember } from "./harness.ts";
import { connectTenant, startTenant, type RunningTenant } from "./tenant.ts";

// clientv3's wait between retries (defaultBackoffWaitBetween).
const RETRY_PAUSE_MS = 25;
// A member without a leader holds a write until its own timeout (7 s by default): the client gives
// up sooner and sends it again, so the longest gap shows the outage rather than etcd's timeout.
const CALL_TIMEOUT_MS = 2_000;
// Between two creates: "a write every few milliseconds".
const WRITE_PAUSE_MS = 5;
const WRITES_AFTER_FAILURE = 30;
const MAX_GAP_MS = 10_000;
// A frozen member is found by the gateway's pings (gateway/core/upstream.ts: one every 6 s while calls
// are open, 5 s for the answer); calls in flight then fail at once and are sent again.
const FROZEN_MAX_GAP_MS = 6_000 + 5_000 + 2_000;

// kube-apiserver's watches and their progress requests carry clientv3.WithRequireLeader.
const REQUIRE_LEADER = { metadata: { hasleader: "true" } };

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const RETRIED = new Set<number>([GrpcStatus.UNAVAILABLE, GrpcStatus.DEADLINE_EXCEEDED]);

interface Acknowledged {
  key: string;
  revision: bigint;
  at: number;
}

/**
 * Creates (OptimisticPut expecting mod_revision 0) of new keys under `prefix`, one after another,
 * each sent again until answered. The compare makes a resend safe: when an unanswered attempt did
 * commit, the resend fails and reads back the object that attempt made.
 */
function writer(client: EtcdClient, prefix: string) {
  const acknowledged: Acknowledged[] = [];
  const retried: string[] = [];
  const unexpected: string[] = [];
  let stopping = false;
  const done = (async () => {
    for (let i = 0; !stopping; i++) {
      const key = `${prefix}${String(i).padStart(6, "0")}`;
      for (;;) {
        try {
          const result = await optimisticPut(client, key, String(i), 0, { getOnFailure: true }, { timeoutMs: CALL_TIMEOUT_MS });
          const revision = result.succeeded ? result.revision : result.kv?.mod_revision;
          if (revision === undefined) unexpected.push(`${key}: the create failed and there is no object`);
          else acknowledged.push({ key, revision: BigInt(revision), at: performance.now() });
          break;
        } catch (error) {
          if (!(error instanceof EtcdGrpcError) || !RETRIED.has(error.code)) {
            unexpected.push(`${key}: ${String(error)}`);
            break;
          }
          retried.push(`${GrpcStatus[error.code]}: ${error.details}`);
          await pause(RETRY_PAUSE_MS);
        }
      }
      await pause(WRITE_PAUSE_MS);
    }
  })();
  return {
    acknowledged,
    retried,
    unexpected,
    /** Finishes the create under way, then stops. */
    stop: async () => {
      stopping = true;
      await done;
    },
  };
}

/** A watch on `prefix` from `from`, as the watch cache keeps one: opened again after the last event seen. */
function follower(client: EtcdClient, prefix: string, from: bigint) {
  const events: { type: string; key: string; revision: bigint }[] = [];
  const ends: string[] = [];
  let next = from;
  let stream: WatchStream | undefined;
  let stopped = false;
  const open = () => {
    const current = client.watch(REQUIRE_LEADER);
    stream = current;
    current.onResponse((answer) => {
      for (const event of answer.events) {
        events.push({ type: event.type, key: event.kv!.key.toString(), revision: BigInt(event.kv!.mod_revision) });
        next = BigInt(event.kv!.mod_revision) + 1n;
      }
      // A watch etcd cancels (no leader, compaction) ends on the stream: end it and start over.
      if (answer.canceled) current.cancel();
    });
    void current.closed.then((error) => {
      if (stopped) return;
      ends.push(error ? `${GrpcStatus[error.code]}: ${error.details}` : "ended");
      void pause(RETRY_PAUSE_MS).then(() => !stopped && open());
    });
    current.create({ key: prefix, range_end: prefixRangeEnd(prefix), start_revision: next, prev_kv: true });
  };
  open();
  return {
    events,
    ends,
    stop: () => {
      stopped = true;
      stream?.cancel();
    },
  };
}

/** The longest wait between two acknowledged writes, in ms. */
function longestGap(acknowledged: readonly Acknowledged[]): number {
  let longest = 0;
  for (let i = 1; i < acknowledged.length; i++) longest = Math.max(longest, acknowledged[i]!.at - acknowledged[i - 1]!.at);
  return longest;
}

describe("a tenant gateway over a 3-member core cluster", () => {
  let cluster: CoreCluster;
  let tenant: RunningTenant;
  let client: EtcdClient;
  let pid: number | undefined;

  before(async () => {
    const dir = await tempDir("faults-");
    cluster = await startCoreCluster(path.join(dir, "core"), { members: 3 });
    const config = testConfig({ CORE_ETCD_ENDPOINTS: cluster.endpoints.join(",") });
    const quota = { storage: "1Gi", writeBytesPerSecond: "16Mi", requestsPerSecond: 100000 };
    tenant = await startTenant(config, cluster, "f", { clientCertSecret: [{ name: "etcd-client", namespace: "f-system" }], quota }, path.join(dir, "f"));
    client = await connectTenant(tenant);
    pid = tenant.proxy.gateway.process.pid;
  });
  after(async () => {
    client?.close();
    await stopAll();
  });

  const logs = () => tenant.proxy.gateway.logs();
  /** The member the gateway's latest core session went to, from its log ("connected to core etcd"). */
  const connectedMember = (): EtcdMember => {
    const lines = logs().split("\n").filter((line) => line.includes('"connected to core etcd"'));
    const endpoint = (JSON.parse(lines.at(-1)!) as { endpoint: string }).endpoint;
    const member = cluster.members.find((m) => m.endpoint === endpoint);
    assert.ok(member, `the gateway connected to ${endpoint}, not a member`);
    return member;
  };
  const assertSameGateway = () => {
    const { process: gateway } = tenant.proxy.gateway;
    assert.deepEqual([gateway.pid, gateway.exitCode, gateway.signalCode], [pid, null, null], "the gateway process never exited");
    assert.equal(logs().split("\n").filter((line) => line.includes('"gateway serving"')).length, 1, "it started once");
  };
  /** A call to one member directly, as the host would make it. */
  const onMember = async <T>(member: EtcdMember, call: (direct: EtcdClient) => Promise<T>): Promise<T> => {
    const direct = connect(member.endpoint, cluster.tls);
    try {
      return await call(direct);
    } finally {
      direct.close();
    }
  };
  /**
   * Makes `member` the leader, so that the member failing under the gateway is always the leader
   * too: the worst case (a SIGTERM hands leadership over first, a SIGKILL leaves the others to
   * elect a new one), and the same in every run.
   */
  const makeLeader = async (member: EtcdMember): Promise<void> => {
    const statuses = await Promise.all(cluster.members.map((m) => onMember(m, (direct) => direct.maintenance.status({}))));
    const target = statuses[cluster.members.indexOf(member)]!.header!.member_id;
    const leader = cluster.members[statuses.findIndex((status) => status.leader === status.header!.member_id)];
    assert.ok(leader, "one member leads");
    if (leader !== member) await onMember(leader, (direct) => direct.maintenance.moveLeader({ targetID: target }));
    await waitFor(`${member.name} to lead`, () => onMember(member, async (direct) => (await direct.maintenance.status({})).leader === target));
  };
  const probe = (where: string) => httpGet(`http://127.0.0.1:${tenant.proxy.healthPort}${where}`).catch((error: Error) => ({ status: 0, body: error.message }));

  const FAILURES = [
    { how: "stopped (SIGTERM)", fail: (member: EtcdMember) => member.stop(), recover: (member: EtcdMember) => member.start(), maxGapMs: MAX_GAP_MS },
    { how: "killed (SIGKILL)", fail: (member: EtcdMember) => member.kill(), recover: (member: EtcdMember) => member.start(), maxGapMs: MAX_GAP_MS },
    // Nothing closes the connection: only the gateway's pings find the member gone.
    { how: "frozen (SIGSTOP)", fail: async (member: EtcdMember) => member.freeze(), recover: (member: EtcdMember) => member.thaw(), maxGapMs: FROZEN_MAX_GAP_MS },
  ];
  for (const { how, fail, recover, maxGapMs } of FAILURES) {
    test(`the member the gateway uses, the leader, is ${how} and started again under writes and a watch: no write lost, no event missed or repeated`, { timeout: 120_000 }, async (t) => {
      const prefix = `/registry/widgets/${how.split(" ")[0]}/`;
      const from = BigInt((await get(client, prefix)).revision) + 1n;
      const watch = follower(client, prefix, from);
      const writes = writer(client, prefix);
      try {
        await waitFor("writes before the failure", async () => writes.acknowledged.length >= 10);
        const victim = connectedMember();
        await makeLeader(victim);
        const logsBefore = logs().length;
        await fail(victim);
        const failedAt = writes.acknowledged.length;
        await waitFor(`${WRITES_AFTER_FAILURE} writes after ${victim.name} was ${how}`, async () => writes.acknowledged.length >= failedAt + WRITES_AFTER_FAILURE, maxGapMs + 20_000, logs);
        const successor = connectedMember();
        assert.notEqual(successor.name, victim.name, "the gateway moved to another member");
        const dialsOfVictim = logs().slice(logsBefore).split("\n").filter((line) => line.includes("core etcd endpoint unreachable") && line.includes(victim.endpoint));
        assert.deepEqual(dialsOfVictim, [], "once its session failed, the gateway did not dial the failed member again");
        await recover(victim);
        const restartedAt = writes.acknowledged.length;
        await waitFor("writes after the restart", async () => writes.acknowledged.length >= restartedAt + 10, 30_000, logs);
        await writes.stop();
        const acknowledged = writes.acknowledged;
        await waitFor("the watch to see every acknowledged write", async () => watch.events.length >= acknowledged.length, 10_000, () => JSON.stringify({ events: watch.events.length, acknowledged: acknowledged.length, ends: watch.ends }));
        watch.stop();

        const gap = longestGap(acknowledged);
        t.diagnostic(`${victim.name}, the leader, ${how}; the gateway moved to ${successor.name}; ${acknowledged.length} creates, longest gap ${gap.toFixed(0)} ms; ${writes.retried.length} resent (${[...new Set(writes.retried)].join("; ")}); the watch ended ${watch.ends.length} time(s) (${[...new Set(watch.ends)].join("; ")})`);
        assert.deepEqual(writes.unexpected, []);
        assert.ok(gap < maxGapMs, `longest gap between acknowledged writes: ${gap.toFixed(0)} ms`);
        // Every acknowledged write is there, at its revision, and nothing else is.
        const stored = await client.kv.range({ key: prefix, range_end: prefixRangeEnd(prefix) });
        assert.deepEqual(
          stored.kvs.map((kv) => [kv.key.toString(), BigInt(kv.mod_revision)]),
          acknowledged.map((a) => [a.key, a.revision]),
        );
        // The watch: each of them once, as a create, in revision order, across its reopenings.
        assert.deepEqual(
          watch.events.map((e) => [e.type, e.key, e.revision]),
          acknowledged.map((a) => ["PUT", a.key, a.revision]),
        );
        assert.ok(watch.ends.length >= 1, "the watch's core stream went with the member, so the tenant's stream ended and was reopened");
        assertSameGateway();
      } finally {
        watch.stop();
        await writes.stop();
      }
    });
  }

  test("WithRequireLeader reaches core etcd: on the gateway's member, left without a quorum, calls that require a leader get etcd's refusal, others are served", { timeout: 60_000 }, async () => {
    await optimisticPut(client, "/registry/widgets/before-quorum-loss", "x", 0);
    const member = connectedMember();
    const others = cluster.members.filter((m) => m !== member);
    await Promise.all(others.map((m) => m.kill()));
    try {
      await waitFor(`${member.name} to lose its leader`, () => onMember(member, async (direct) => (await direct.maintenance.status({})).leader === "0"), 20_000);
      // A serializable read needs no leader, so only the metadata can make etcd refuse it.
      const read = { key: "/registry/widgets/", range_end: prefixRangeEnd("/registry/widgets/"), serializable: true, count_only: true };
      assert.ok(Number((await client.kv.range(read)).count) > 0);
      const refused = await expectGrpcError(client.kv.range(read, REQUIRE_LEADER), GrpcStatus.UNAVAILABLE);
      assert.equal(refused.details, "etcdserver: no leader");
      const required = client.watch(REQUIRE_LEADER);
      required.create({ key: "/registry/widgets/", range_end: prefixRangeEnd("/registry/widgets/") });
      const ended = await required.closed;
      assert.deepEqual([ended?.code, ended?.details], [GrpcStatus.UNAVAILABLE, "etcdserver: no leader"]);
      const plain = client.watch();
      try {
        plain.create({ key: "/registry/widgets/", range_end: prefixRangeEnd("/registry/widgets/") });
        assert.equal((await plain.next()).created, true);
      } finally {
        plain.cancel();
      }
    } finally {
      await Promise.all(others.map((m) => m.start()));
    }
  });

  test("with every member down, calls answer UNAVAILABLE naming the endpoints and readiness fails; when they return, the gateway recovers by itself", { timeout: 120_000 }, async () => {
    // A power loss: no member hands anything over.
    await Promise.all(cluster.members.map((member) => member.kill()));
    try {
      // Readiness may first report the session that just died; then it names the endpoints.
      const notReady = await waitFor("readiness to fail for want of any member", async () => {
        const answer = await probe("/readyz");
        return answer.status === 503 && answer.body.startsWith("core etcd: no core etcd endpoint is reachable") && answer;
      });
      for (const endpoint of cluster.endpoints) assert.ok(notReady.body.includes(endpoint), `${notReady.body} names ${endpoint}`);
      assert.equal((await probe("/livez")).status, 200, "alive, only not ready");
      // A first call may still meet the session that just died; the next meets no member at all.
      const failure = await waitFor("a call to fail for want of any member", async () => {
        const error = await expectGrpcError(client.kv.range({ key: "/registry/health" }, { timeoutMs: CALL_TIMEOUT_MS }), GrpcStatus.UNAVAILABLE);
        return error.details.startsWith("no core etcd endpoint is reachable") && error;
      });
      for (const endpoint of cluster.endpoints) assert.ok(failure.details.includes(endpoint), `${failure.details} names ${endpoint}`);
      const watch = client.watch(REQUIRE_LEADER);
      watch.create({ key: "/registry/widgets/", range_end: prefixRangeEnd("/registry/widgets/") });
      const ended = await watch.closed;
      assert.deepEqual([ended?.code, ended?.details.startsWith("no core etcd endpoint is reachable")], [GrpcStatus.UNAVAILABLE, true], `a watch cannot open either: ${ended?.message}`);
    } finally {
      // Started together: none is healthy before a quorum is.
      await Promise.all(cluster.members.map((member) => member.start()));
    }
    await waitFor("readiness to recover", async () => (await probe("/readyz")).status === 200, 20_000, logs);
    const created = await optimisticPut(client, "/registry/widgets/after-outage", "back", 0);
    assert.equal(created.succeeded, true);
    assert.equal((await get(client, "/registry/widgets/after-outage")).kv?.value.toString(), "back");
    assertSameGateway();
  });
});
