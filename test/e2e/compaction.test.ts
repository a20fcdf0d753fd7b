// Found by Kubernetes' storage suite through the gateway (test/e2e/storage-suite.test.ts): an API
// server's store learns the host's compactions by reading and watching the root key
// compact_rev_key, which lies outside a tenant's prefix. A tenant's Range or Watch of exactly that
// key reads the host's (gateway/keys.ts HOST_COMPACTION_KEY); everything else about it stays
// under the prefix, and the tenant never writes the host's.
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { connect, type EtcdClient } from "../support/etcd-client.ts";
import { testConfig } from "../support/requests.ts";
import { startCoreEtcd, stopAll, tempDir, type CoreEtcd } from "./harness.ts";
import { connectTenant, startTenant } from "./tenant.ts";

describe("the host's compactions, told to a tenant", () => {
  let core: CoreEtcd;
  let host: EtcdClient;
  let tenant: EtcdClient;

  before(async () => {
    const dir = await tempDir("compaction-");
    core = await startCoreEtcd(path.join(dir, "core"));
    host = connect(core.endpoint, { ...core.tls, servername: "localhost" });
    const config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
    tenant = await connectTenant(await startTenant(config, core, "compacted", { clientCertSecret: [{ name: "etcd-client", namespace: "compacted-system" }] }, path.join(dir, "tenant")));
  });

  after(async () => {
    host?.close();
    tenant?.close();
    await stopAll();
  });

  /** What kube-apiserver's compactor does (etcd3/compact.go): record the revision, then compact. */
  async function compactAsTheHost(): Promise<number> {
    for (let i = 0; i < 3; i++) await host.kv.put({ key: "/registry/host/key", value: `v${i}` });
    const revision = Number((await host.kv.range({ key: "/registry/host/key" })).header!.revision);
    await host.kv.put({ key: "compact_rev_key", value: String(revision) });
    await host.kv.compact({ revision });
    return revision;
  }

  const tenantSees = async () => (await tenant.kv.range({ key: "compact_rev_key" })).kvs[0];
  const hostKey = async () => (await host.kv.range({ key: "compact_rev_key" })).kvs[0];

  test("a tenant's Range and Watch of compact_rev_key read the host's compaction record, as an API server's store does", async () => {
    assert.equal(await tenantSees(), undefined, "nothing before the host compacts");
    const watch = tenant.watch();
    watch.send({ create_request: { key: "compact_rev_key" } });
    assert.equal((await watch.next()).created, true);
    for (let round = 1; round <= 2; round++) {
      const revision = await compactAsTheHost();
      const seen = (await tenantSees())!;
      assert.deepEqual([seen.key.toString(), seen.value.toString(), seen.version], ["compact_rev_key", String(revision), String(round)]);
      const event = await watch.next();
      assert.deepEqual(event.events.map((e) => [e.kv!.key.toString(), e.kv!.value.toString()]), [["compact_rev_key", String(revision)]]);
    }
    watch.end();
  });

  test("a tenant's writes of compact_rev_key, and any range from it, stay under its prefix; the host's record is never touched", async () => {
    const before = await hostKey();
    await tenant.kv.put({ key: "compact_rev_key", value: "1" });
    await tenant.kv.txn({ compare: [{ key: "compact_rev_key", target: "VERSION", result: "EQUAL", version: 1 }], success: [{ request_put: { key: "compact_rev_key", value: "2" } }] });
    assert.deepEqual(await hostKey(), before, "the host's record is as it was");
    const own = (await host.kv.range({ key: "/etcdstorage/compacted/compact_rev_key" })).kvs[0];
    assert.equal(own?.value.toString(), "2", "the tenant's writes went to its own key");
    // A range (not the key alone) is the tenant's own keyspace, as for any other key.
    const ranged = await tenant.kv.range({ key: "compact_rev_key", range_end: "compact_rev_kez" });
    assert.deepEqual(ranged.kvs.map((kv) => [kv.key.toString(), kv.value.toString()]), [["compact_rev_key", "2"]]);
    await tenant.kv.deleteRange({ key: "compact_rev_key" });
    assert.deepEqual(await hostKey(), before, "a delete leaves the host's record too");
    assert.deepEqual((await tenant.kv.range({ key: "/registry/host/key" })).kvs, [], "and nothing else outside the prefix is read");
  });
});
