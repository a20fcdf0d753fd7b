// Reads that make core etcd build large answers (gateway/tenant/reads.ts): etcd reads every object a
// Range covers into memory before it answers, so a tenant's unpaged lists, many at once, would
// take the host's etcd memory in multiples of all the tenant stores. Through the gateway, core
// etcd builds at most its read budget (64 MiB per replica) of them at a time, measured here on
// core etcd's own peak memory.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { type EtcdClient } from "../support/etcd-client.ts";
import { testConfig } from "../support/requests.ts";
import { startCoreEtcd, stopAll, tempDir, type CoreEtcd } from "./harness.ts";
import { connectTenant, startTenant } from "./tenant.ts";

const MiB = 1024 * 1024;
const OBJECTS = 384;
const VALUE = Buffer.alloc(64 * 1024, "r"); // 384 x 64 KiB: 24 MiB, two of which fit the budget
const AT_ONCE = 16;

/** Core etcd's peak resident memory so far (VmHWM), in MiB. */
async function peakMiB(core: CoreEtcd): Promise<number> {
  const status = await readFile(`/proc/${core.pid()}/status`, "utf8");
  return Number(/^VmHWM:\s+(\d+) kB/m.exec(status)![1]) / 1024;
}

describe("reads that make core etcd build large answers", () => {
  let core: CoreEtcd;
  let client: EtcdClient;

  before(async () => {
    const dir = await tempDir("reads-");
    core = await startCoreEtcd(dir, { extraFlags: [`--quota-backend-bytes=${512 * MiB}`] });
    const config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
    const quota = { storage: "64Mi", writeBytesPerSecond: "16Mi", requestsPerSecond: 100000 };
    const tenant = await startTenant(config, core, "reads", { clientCertSecret: [{ name: "etcd-client", namespace: "reads-system" }], replicas: 1, quota }, path.join(dir, "reads"));
    client = await connectTenant(tenant);
  });
  after(async () => {
    client?.close();
    await stopAll();
  });

  test(`${AT_ONCE} unpaged lists of a 24 MiB prefix at once: each answer whole, and core etcd's peak memory grows by about two of them, not ${AT_ONCE}`, async (t) => {
    for (let i = 0; i < OBJECTS; i += 32) {
      await Promise.all(Array.from({ length: 32 }, (_, k) => client.kv.put({ key: `/registry/blobs/b-${String(i + k).padStart(4, "0")}`, value: VALUE })));
    }
    const list = () => client.kv.range({ key: "/registry/blobs/", range_end: "/registry/blobs0" });
    // One list first: the peak after it is that of one answer built.
    assert.equal((await list()).kvs.length, OBJECTS);
    const before = await peakMiB(core);
    const answers = await Promise.all(Array.from({ length: AT_ONCE }, list));
    for (const answer of answers) assert.equal(answer.kvs.length, OBJECTS);
    const growth = (await peakMiB(core)) - before;
    t.diagnostic(`core etcd's peak memory: ${before.toFixed(0)} MiB after one list, +${growth.toFixed(0)} MiB after ${AT_ONCE} at once`);
    // Measured: +150 to +180 MiB; with no budget, 16 answers built at once took it up by 580 MiB.
    assert.ok(growth < 350, `core etcd's peak memory grew by ${growth.toFixed(0)} MiB while ${AT_ONCE} lists of 24 MiB ran`);
  });
});
