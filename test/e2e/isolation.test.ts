// Isolation at scale: 20 tenants at once on one core etcd, each through a gateway started from
// its returned Deployment with the default quotas, while one of them storms (writes as fast as its
// write rate lets it, and lists its whole prefix, unpaged, over and over). Every other tenant keeps
// working as an idle API server does (a write, a read and a list, four times a second), and the
// host keeps writing directly: none of their calls may fail.
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { connect, type EtcdClient } from "../support/etcd-client.ts";
import { prefixRangeEnd } from "../support/kubernetes-client.ts";
import { testConfig } from "../support/requests.ts";
import { startCoreEtcd, stopAll, tempDir, type CoreEtcd } from "./harness.ts";
import { connectTenant, startTenant, type RunningTenant } from "./tenant.ts";

const TENANTS = 20;
const STORM_SECONDS = 12;
const STORM_WRITERS = 16;
const STORM_LISTERS = 4;
const STORM_VALUE = Buffer.alloc(16 * 1024, "s");
// What an idle API server's storage does, and what the host does, per period.
const PERIOD_MS = 250;
// A call of a quiet tenant or of the host that takes longer than this counts as hurt.
const SLOW_MS = 2_000;

describe(`${TENANTS} tenants on one core etcd, one of them storming`, () => {
  let dir: string;
  let core: CoreEtcd;
  let host: EtcdClient;
  const tenants: RunningTenant[] = [];
  const clients: EtcdClient[] = [];

  before(async () => {
    dir = await tempDir("isolation-");
    core = await startCoreEtcd(path.join(dir, "core"));
    host = connect(core.endpoint, { ...core.tls, servername: "localhost" });
    const config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
    // Started five at a time: each start is a sync (its PKI) and a gateway process.
    for (let first = 0; first < TENANTS; first += 5) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(5, TENANTS - first) }, (_, i) => {
          const name = `tenant-${first + i}`;
          return startTenant(config, core, name, { clientCertSecret: [{ name: "etcd-client", namespace: `${name}-system` }] }, path.join(dir, name));
        }),
      );
      tenants.push(...batch);
    }
    clients.push(...(await Promise.all(tenants.map((t) => connectTenant(t)))));
  });

  after(async () => {
    for (const client of clients) client.close();
    host?.close();
    await stopAll();
  });

  test("the quiet tenants' calls and the host's writes all succeed, promptly, while one tenant storms", async () => {
    const [stormer, ...quiet] = clients as [EtcdClient, ...EtcdClient[]];
    const deadline = Date.now() + STORM_SECONDS * 1000;
    const storm = { writes: 0, refused: 0, lists: 0, listedKeys: 0 };
    const storming = [
      ...Array.from({ length: STORM_WRITERS }, async (_, w) => {
        for (let i = 0; Date.now() < deadline; i++) {
          // Refusals (the write rate's "wait too long") are the stormer's own business.
          await stormer.kv.put({ key: `/registry/storm/${w}-${i % 500}`, value: STORM_VALUE }).then(() => storm.writes++, () => storm.refused++);
        }
      }),
      ...Array.from({ length: STORM_LISTERS }, async () => {
        while (Date.now() < deadline) {
          const answer = await stormer.kv.range({ key: "/registry/", range_end: prefixRangeEnd("/registry/") }).catch(() => undefined);
          storm.lists++;
          storm.listedKeys = Math.max(storm.listedKeys, answer?.kvs.length ?? 0);
        }
      }),
    ];
    const failures: string[] = [];
    const latencies: number[] = [];
    const timed = async (what: string, call: () => Promise<unknown>) => {
      const started = performance.now();
      try {
        await call();
        const took = performance.now() - started;
        latencies.push(took);
        if (took > SLOW_MS) failures.push(`${what}: took ${took.toFixed(0)} ms`);
      } catch (error) {
        failures.push(`${what}: ${error instanceof Error ? error.message : String(error)}`);
      }
    };
    const steady = async (work: (round: number) => Promise<void>) => {
      for (let round = 0; Date.now() < deadline; round++) {
        const started = Date.now();
        await work(round);
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, PERIOD_MS - (Date.now() - started))));
      }
    };
    const quietWork = quiet.map((client, t) =>
      steady(async (round) => {
        const key = `/registry/configmaps/default/cm-${round % 20}`;
        await timed(`tenant-${t + 1} put`, () => client.kv.put({ key, value: `round ${round}` }));
        await timed(`tenant-${t + 1} get`, () => client.kv.range({ key }));
        await timed(`tenant-${t + 1} list`, () => client.kv.range({ key: "/registry/configmaps/", range_end: prefixRangeEnd("/registry/configmaps/"), limit: 500 }));
      }),
    );
    let hostWrites = 0;
    const hostWork = steady(async (round) => {
      await timed("host put", () => host.kv.put({ key: `/registry/leases/kube-system/host-${round % 10}`, value: `renewed ${round}` }));
      hostWrites++;
    });
    await Promise.all([...storming, ...quietWork, hostWork]);

    assert.ok(storm.writes > 100 && storm.lists > 10, `the stormer stormed: ${JSON.stringify(storm)}`);
    assert.deepEqual(failures, [], `${failures.length} of ${latencies.length + failures.length} calls failed or were slow`);
    assert.ok(hostWrites >= (STORM_SECONDS * 1000) / PERIOD_MS / 2, `the host kept writing (${hostWrites})`);
    const sorted = [...latencies].sort((a, b) => a - b);
    process.stderr.write(`[isolation] storm ${JSON.stringify(storm)}; ${latencies.length} quiet and host calls, p50 ${sorted[Math.floor(sorted.length / 2)]!.toFixed(1)} ms, p99 ${sorted[Math.floor(sorted.length * 0.99)]!.toFixed(1)} ms, max ${sorted.at(-1)!.toFixed(1)} ms\n`);
  });
});
