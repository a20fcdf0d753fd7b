// Issue 10: every call kube-apiserver's etcd3 storage makes, shaped as k8s.io/apiserver and etcd's
// client/v3/kubernetes send it (test/support/kubernetes-client.ts), through a tenant gateway
// started from the returned Deployment, against real TLS etcd of each line the tests run (3.6 and
// 3.5: harness.ts's ETCD_LINES). Keys are the API server's own (--etcd-prefix=/registry); each
// answer must be what etcd gives, with the tenant's prefix gone.
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { connect, expectGrpcError, GrpcStatus, type EtcdClient, type Event, type WatchResponse, type WatchStream } from "../support/etcd-client.ts";
import { count, get, leaseManagerTtl, list, nextPage, optimisticDelete, optimisticPut, prefixRangeEnd, supportsRequestWatchProgress, type ListOptions } from "../support/kubernetes-client.ts";
import { testConfig } from "../support/requests.ts";
import { ETCD_LINES, startCoreEtcd, stopAll, tempDir, type CoreEtcd } from "./harness.ts";
import { connectTenant, startTenant, type RunningTenant } from "./tenant.ts";

const TENANT = "kas";
const PREFIX = `/etcdstorage/${TENANT}/`;
// kube-apiserver's watches carry clientv3.WithRequireLeader (watcher.go), and so does its
// RequestWatchProgress (store.go's watchContext).
const REQUIRE_LEADER = { metadata: { hasleader: "true" } };
// kube-apiserver re-sends a progress request every 100 ms while a consistent read waits, and gives
// up after 3 s. Nine answers in ten must come within the first period; on a loaded machine (tests
// run in parallel) a paused process may take one past it, never near the 3 s.
const PROGRESS_ROUNDS = 30;
const PROGRESS_BUDGET_MS = 100;
const PROGRESS_TAIL_MS = 1_000;

const text = (bytes: Buffer | undefined) => bytes?.toString("utf8");

for (const line of ETCD_LINES) {
  describe(`kube-apiserver's calls through the gateway, on etcd ${line}`, () => {
    let core: CoreEtcd;
    let tenant: RunningTenant;
    let client: EtcdClient;
    let host: EtcdClient;

    before(async () => {
      const dir = await tempDir("kube-apiserver-");
      core = await startCoreEtcd(path.join(dir, "core"), { line });
      const config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
      // Quotas far above what the file uses: quota.test.ts is about limits.
      const quota = { storage: "1Gi", writeBytesPerSecond: "16Mi", requestsPerSecond: 100000 };
      tenant = await startTenant(config, core, TENANT, { clientCertSecret: [{ name: "etcd-client", namespace: `${TENANT}-system` }], quota }, path.join(dir, TENANT));
      client = await connectTenant(tenant);
      host = connect(core.endpoint, core.tls);
    });
    after(async () => {
      client?.close();
      host?.close();
      await stopAll();
    });

    /** A watch stream as the watch cache opens it (watcher.go's startWatching), once etcd created the watch. */
    const openWatch = async (start: number | string, key = "/registry/widgets/"): Promise<WatchStream> => {
      const watch = client.watch(REQUIRE_LEADER);
      watch.create({ key, range_end: prefixRangeEnd(key), start_revision: start, prev_kv: true, progress_notify: true });
      const created = await watch.next();
      assert.deepEqual([created.created, created.canceled, created.watch_id], [true, false, "0"], JSON.stringify(created));
      return watch;
    };
    /** The stream's answers up to the first for which `until` holds. */
    const answersUntil = async (watch: WatchStream, until: (answer: WatchResponse) => boolean): Promise<WatchResponse[]> => {
      const answers: WatchResponse[] = [];
      for (;;) {
        const answer = await watch.next(2_000);
        answers.push(answer);
        if (until(answer)) return answers;
      }
    };
    const isProgress = (answer: WatchResponse) => answer.watch_id === "-1" && !answer.created && !answer.canceled && answer.events.length === 0;

    test("create: OptimisticPut expecting mod_revision 0 succeeds once, under the prefix; a second create fails and reads the object back", async () => {
      const key = "/registry/widgets/default/create";
      const created = await optimisticPut(client, key, "v1", 0, { getOnFailure: true });
      assert.equal(created.succeeded, true);
      assert.equal(created.answer.responses[0]!.response, "response_put");
      assert.equal(created.answer.responses[0]!.response_put!.header!.revision, created.revision, "store.go reads the new resourceVersion from the put's header");
      const stored = await host.kv.range({ key: `${PREFIX}${key}` });
      assert.deepEqual(stored.kvs.map((kv) => [text(kv.value), kv.mod_revision]), [["v1", created.revision]], "the object lies under the tenant's prefix in core etcd");

      const again = await optimisticPut(client, key, "v2", 0, { getOnFailure: true });
      assert.equal(again.succeeded, false);
      assert.equal(again.revision, created.revision, "a failed compare writes nothing");
      assert.deepEqual([text(again.kv?.key), text(again.kv?.value), again.kv?.mod_revision, again.kv?.create_revision], [key, "v1", created.revision, created.revision]);
      // Without getOnFailure (store.go's Create) the failure branch is empty and so is the answer.
      const bare = await optimisticPut(client, key, "v2", 0);
      assert.deepEqual([bare.succeeded, bare.answer.responses], [false, []]);
    });

    test("update: OptimisticPut at the object's mod_revision succeeds; at a stale one it fails and returns the object as it is", async () => {
      const key = "/registry/widgets/default/update";
      const v1 = await optimisticPut(client, key, "v1", 0);
      const v2 = await optimisticPut(client, key, "v2", v1.revision, { getOnFailure: true });
      assert.equal(v2.succeeded, true);
      assert.ok(BigInt(v2.revision) > BigInt(v1.revision));
      // GuaranteedUpdate with a cached (stale) object: the conflict hands back the current one to retry from.
      const stale = await optimisticPut(client, key, "v3", v1.revision, { getOnFailure: true });
      assert.equal(stale.succeeded, false);
      assert.deepEqual([text(stale.kv?.key), text(stale.kv?.value), stale.kv?.mod_revision, stale.kv?.version], [key, "v2", v2.revision, "2"]);
      assert.equal(text((await get(client, key)).kv?.value), "v2", "the stale update changed nothing");
    });

    test("delete: OptimisticDelete at the current mod_revision deletes; at a stale one it returns the object; on a deleted key, nothing", async () => {
      const key = "/registry/widgets/default/delete";
      const v1 = await optimisticPut(client, key, "v1", 0);
      const v2 = await optimisticPut(client, key, "v2", v1.revision);
      const stale = await optimisticDelete(client, key, v1.revision, { getOnFailure: true });
      assert.deepEqual([stale.succeeded, text(stale.kv?.value), stale.kv?.mod_revision], [false, "v2", v2.revision]);
      const deleted = await optimisticDelete(client, key, v2.revision, { getOnFailure: true });
      assert.equal(deleted.succeeded, true);
      const answer = deleted.answer.responses[0]!;
      assert.equal(answer.response, "response_delete_range");
      assert.deepEqual([answer.response_delete_range!.deleted, answer.response_delete_range!.header!.revision], ["1", deleted.revision]);
      assert.equal((await get(client, key)).kv, undefined);
      // kvFromTxnResponse: no object when the key is gone (store.go then reports NotFound).
      const gone = await optimisticDelete(client, key, v2.revision, { getOnFailure: true });
      assert.deepEqual([gone.succeeded, gone.kv, gone.answer.responses[0]!.response_range!.kvs], [false, undefined, []]);
    });

    test("get: limit 1, at the latest revision or a past one; a missing key has none", async () => {
      const key = "/registry/widgets/default/get";
      const v1 = await optimisticPut(client, key, "v1", 0);
      const v2 = await optimisticPut(client, key, "v2", v1.revision);
      const latest = await get(client, key);
      assert.deepEqual([text(latest.kv?.value), latest.revision], ["v2", v2.revision]);
      const past = await get(client, key, { revision: v1.revision });
      assert.deepEqual([text(past.kv?.value), past.kv?.mod_revision], ["v1", v1.revision]);
      assert.equal(past.revision, v2.revision, "the header carries the store's revision, not the one asked for");
      // A single-key read is a Range without range_end: were one sent, even empty, etcd would read
      // on to the next key and hand this neighbour to a Get of the missing one.
      await optimisticPut(client, `${key}0`, "neighbour", 0);
      assert.equal((await get(client, `${key}-missing`)).kv, undefined);
    });

    test("list: pages of `limit` continuing after the last key + \\0 at the first page's revision; count tells what is left; count_only", async () => {
      const prefix = "/registry/gadgets/default/";
      const names = ["a", "b", "c", "d", "e", "f", "g"];
      for (const name of names) assert.equal((await optimisticPut(client, `${prefix}${name}`, name, 0)).succeeded, true);
      // Keys beside the prefix, which the range end must exclude.
      await optimisticPut(client, "/registry/gadgets/default", "parent", 0);
      await optimisticPut(client, "/registry/gadgets/defaulu", "sibling", 0);

      const pages: { keys: string[]; count: number; more: boolean }[] = [];
      let opts: ListOptions = { limit: 3 };
      let pinned = "";
      for (;;) {
        const page = await list(client, prefix, opts);
        pages.push({ keys: page.kvs.map((kv) => kv.key.toString()), count: page.count, more: page.more });
        if (pages.length === 1) {
          pinned = page.revision;
          // Written after the first page: the pinned revision keeps it out of the later ones.
          await optimisticPut(client, `${prefix}h`, "h", 0);
        } else {
          assert.ok(BigInt(page.revision) > BigInt(pinned), "the header names the store's revision, not the pinned one");
        }
        // ListIter's hasMore.
        if (page.count <= page.kvs.length) break;
        opts = nextPage(opts, page);
        assert.equal(opts.revision, pinned);
      }
      const keys = (list: string[]) => list.map((name) => `${prefix}${name}`);
      assert.deepEqual(pages, [
        { keys: keys(["a", "b", "c"]), count: 7, more: true },
        { keys: keys(["d", "e", "f"]), count: 4, more: true },
        { keys: keys(["g"]), count: 1, more: false },
      ]);
      assert.equal(await count(client, prefix), 8, "count_only at the latest revision counts the late one");
      const counted = await client.kv.range({ key: prefix, range_end: prefixRangeEnd(prefix), count_only: true });
      assert.deepEqual(counted.kvs, [], "count_only carries no keys");
    });

    test("health: the /healthz etcd check's Range of /registry/health answers within its 2 s deadline", async () => {
      const started = performance.now();
      const answer = await client.kv.range({ key: "/registry/health" }, { timeoutMs: 2_000 });
      const elapsedMs = performance.now() - started;
      assert.deepEqual([answer.kvs, answer.count], [[], "0"]);
      assert.ok(BigInt(answer.header!.revision) > 0n);
      assert.ok(elapsedMs < 2_000, `answered after ${elapsedMs.toFixed(0)} ms`);
    });

    test("leases: LeaseGrant as the lease manager asks for --event-ttl=1h, objects created with it; revoked, they are gone", async () => {
      const ttl = leaseManagerTtl(3600);
      assert.equal(ttl, 3660);
      const granted = await client.lease.grant({ TTL: ttl });
      assert.equal(granted.error, "");
      assert.equal(granted.TTL, String(ttl), "the lease lasts as long as the lease manager counts on");
      // The lease manager reuses one lease for the objects of the next minute.
      const keys = ["/registry/events/default/e1", "/registry/events/default/e2"];
      for (const key of keys) assert.equal((await optimisticPut(client, key, "event", 0, { leaseId: granted.ID })).succeeded, true);
      for (const key of keys) assert.equal((await get(client, key)).kv?.lease, granted.ID, key);
      const alive = await client.lease.timeToLive({ ID: granted.ID, keys: true });
      assert.deepEqual(alive.keys.map((key) => key.toString()).sort(), keys, "the lease's keys, as the tenant names them");
      await client.lease.revoke({ ID: granted.ID });
      for (const key of keys) assert.equal((await get(client, key)).kv, undefined, key);
      assert.equal(await count(client, "/registry/events/"), 0);
    });

    test("large objects: 64 pages in flight at once and a watch replaying them, each exactly as core etcd holds the objects", async () => {
      // Pages of several DATA frames, reassembled and answered from reused buffers (gateway/wire/buffers.ts):
      // a buffer reused while still in use would show as another page's bytes.
      const prefix = "/registry/blobs/default/";
      const names = Array.from({ length: 24 }, (_, i) => `blob-${String(i).padStart(2, "0")}`);
      const from = BigInt((await get(client, prefix)).revision) + 1n;
      for (const [i, name] of names.entries()) {
        assert.equal((await optimisticPut(client, `${prefix}${name}`, `${name}:`.repeat(800 + i * 300), 0)).succeeded, true);
      }
      const stored = (await host.kv.range({ key: `${PREFIX}${prefix}`, range_end: prefixRangeEnd(`${PREFIX}${prefix}`) })).kvs;
      const objects = stored.map((kv) => [kv.key.subarray(PREFIX.length).toString(), kv.value.toString(), kv.mod_revision]);
      assert.equal(objects.length, names.length);

      const pages = Array.from({ length: 64 }, (_, n) => ({ start: (n * 7) % names.length, limit: 1 + (n % 8) }));
      const answers = await Promise.all(pages.map(({ start, limit }) => list(client, prefix, { limit, continue: `${prefix}${names[start]}` })));
      for (const [n, { start, limit }] of pages.entries()) {
        const shown = answers[n]!.kvs.map((kv) => [kv.key.toString(), kv.value.toString(), kv.mod_revision]);
        assert.deepEqual(shown, objects.slice(start, start + limit), `page ${n}: ${limit} objects from ${names[start]}`);
      }

      const watch = await openWatch(from.toString(), prefix);
      try {
        const events: Event[] = [];
        while (events.length < names.length) events.push(...(await watch.next(2_000)).events);
        assert.deepEqual(events.map((e) => [e.type, text(e.kv?.key), text(e.kv?.value), e.kv?.mod_revision]), objects.map((object) => ["PUT", ...object]));
      } finally {
        watch.cancel();
      }
    });

    test("watch: as the watch cache opens it (from a revision, prev_kv, progress_notify, WithRequireLeader), PUT and DELETE events with the previous object", async () => {
      const key = "/registry/widgets/watched/w";
      const from = BigInt((await get(client, key)).revision) + 1n;
      const v1 = await optimisticPut(client, key, "v1", 0);
      const v2 = await optimisticPut(client, key, "v2", v1.revision);
      await optimisticPut(client, "/registry/other/x", "outside the watched range", 0);
      const deleted = await optimisticDelete(client, key, v2.revision);
      const watch = await openWatch(from.toString());
      try {
        const seen: Event[] = [];
        // History first (from the revision asked for), then a live create.
        while (seen.length < 3) seen.push(...(await watch.next(2_000)).events);
        const recreated = await optimisticPut(client, key, "v3", 0);
        while (seen.length < 4) seen.push(...(await watch.next(2_000)).events);
        const shown = seen.map((e) => [e.type, text(e.kv?.key), text(e.kv?.value), e.kv?.mod_revision, text(e.prev_kv?.value), e.prev_kv?.mod_revision]);
        assert.deepEqual(shown, [
          ["PUT", key, "v1", v1.revision, undefined, undefined],
          ["PUT", key, "v2", v2.revision, "v1", v1.revision],
          // A delete carries no value; its previous object is what the watch cache deletes.
          ["DELETE", key, "", deleted.revision, "v2", v2.revision],
          ["PUT", key, "v3", recreated.revision, undefined, undefined],
        ]);
        assert.equal(text(seen[1]!.prev_kv?.key), key, "the previous object's key is the tenant's too");
      } finally {
        watch.cancel();
      }
    });

    test(`watch progress requests are answered within ${PROGRESS_BUDGET_MS} ms (nine in ten), at a revision no older than the latest write, after every event up to it`, async (t) => {
      const from = BigInt((await get(client, "/registry/widgets/")).revision) + 1n;
      const watch = await openWatch(from.toString());
      const latencies: number[] = [];
      try {
        for (let round = 0; round < PROGRESS_ROUNDS; round++) {
          // Half the writes inside the watched range, half outside: the header counts both.
          const inside = round % 2 === 0;
          const key = inside ? `/registry/widgets/progress/${round}` : `/registry/other/progress/${round}`;
          const written = await optimisticPut(client, key, String(round), 0);
          const sent = performance.now();
          watch.requestProgress();
          const answers = await answersUntil(watch, isProgress);
          latencies.push(performance.now() - sent);
          const progress = answers.at(-1)!;
          assert.ok(BigInt(progress.header!.revision) >= BigInt(written.revision), `round ${round}: progress at ${progress.header!.revision}, latest write at ${written.revision}`);
          // What the watch cache relies on: nothing up to the progress revision comes after it.
          const events = answers.flatMap((answer) => answer.events);
          if (inside) assert.deepEqual(events.map((e) => [text(e.kv?.key), e.kv?.mod_revision]), [[key, written.revision]], `round ${round}`);
          else assert.deepEqual(events, [], `round ${round}`);
        }
      } finally {
        watch.cancel();
      }
      const sorted = [...latencies].sort((a, b) => a - b);
      const percentile = (p: number) => sorted[Math.ceil((p / 100) * sorted.length) - 1]!;
      const shown = `median ${percentile(50).toFixed(1)}, 90th percentile ${percentile(90).toFixed(1)}, max ${sorted.at(-1)!.toFixed(1)} (all: ${latencies.map((ms) => ms.toFixed(1)).join(", ")})`;
      t.diagnostic(`progress answers in ms over ${PROGRESS_ROUNDS} rounds: ${shown}`);
      assert.ok(percentile(90) < PROGRESS_BUDGET_MS, shown);
      assert.ok(sorted.at(-1)! < PROGRESS_TAIL_MS, shown);
    });

    test("feature check: Status through the gateway reports core etcd's version, which kube-apiserver's rule takes as supporting progress requests", async () => {
      // The rule itself, at its edges, so that a wrong reading of it cannot pass below.
      const rule = Object.fromEntries(["3.4.30", "3.4.31", "3.5.0", "3.5.12", "3.5.13-rc.0", "3.5.13", "v3.5.16", "3.6.0", "3.5", "3.05.16"].map((v) => [v, supportsRequestWatchProgress(v)]));
      assert.deepEqual(rule, { "3.4.30": false, "3.4.31": true, "3.5.0": false, "3.5.12": false, "3.5.13-rc.0": false, "3.5.13": true, "v3.5.16": true, "3.6.0": true, "3.5": false, "3.05.16": false });
      const status = await client.maintenance.status({}, { timeoutMs: 2_000 });
      assert.equal(status.version, core.release.version);
      assert.equal(status.version, (await host.maintenance.status({})).version);
      assert.equal(supportsRequestWatchProgress(status.version), true, `version ${status.version}`);
    });

    // Last: the host's compaction removes the history the tests above read.
    test("after the host compacts: a continue at the old revision and a watch from it answer as etcd does (kube-apiserver's 410 Gone)", async () => {
      const prefix = "/registry/gadgets/default/";
      const first = await list(client, prefix, { limit: 2 });
      // Two writes: a watch from the list's revision + 1 is refused only below the compacted revision.
      for (const name of ["i", "j"]) await optimisticPut(client, `${prefix}${name}`, name, 0);
      const latest = (await get(client, prefix)).revision;
      await host.kv.compact({ revision: latest });
      const compacted = await expectGrpcError(list(client, prefix, nextPage({ limit: 2 }, first)), GrpcStatus.OUT_OF_RANGE);
      assert.equal(compacted.details, "etcdserver: mvcc: required revision has been compacted");
      const watch = client.watch(REQUIRE_LEADER);
      try {
        watch.create({ key: prefix, range_end: prefixRangeEnd(prefix), start_revision: BigInt(first.revision) + 1n, prev_kv: true, progress_notify: true });
        // Created first, then cancelled with the compaction's revision: the watch cache relists.
        const answers = await answersUntil(watch, (answer) => answer.canceled);
        assert.deepEqual(answers.map((a) => [a.created, a.canceled, a.compact_revision, a.events.length]), [[true, false, "0", 0], [false, true, latest, 0]]);
      } finally {
        watch.cancel();
      }
    });
  });
}
