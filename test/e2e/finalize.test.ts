// Issue: deleting an EtcdStorage deletes exactly that tenant's data. Real etcd; the cleanup Job
// returned by /finalize is run with exactly its command, flags and mounted files.
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { finalize } from "../../hooks/finalize.ts";
import type { HookRequest, KubeObject } from "../../hooks/observed.ts";
import { observe, testConfig } from "../support/requests.ts";
import { etcdRelease, podSpecOf, runContainer, startCoreEtcd, stopAll, tempDir, type CoreEtcd, type K8sObject } from "./harness.ts";
import { objectsOf, startTenant, type RunningTenant } from "./tenant.ts";

const spec = (name: string) => ({ caCertConfigMap: [], clientCertSecret: [{ name: "etcd-client", namespace: `${name}-system` }] });

describe("finalize on real etcd", () => {
  let dir: string;
  let core: CoreEtcd;
  let config: ReturnType<typeof testConfig>;
  let a: RunningTenant;
  let ab: RunningTenant;

  before(async () => {
    dir = await tempDir("finalize-");
    core = await startCoreEtcd(dir);
    config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
    [a, ab] = await Promise.all([startTenant(config, core, "a", spec("a"), path.join(dir, "a")), startTenant(config, core, "ab", spec("ab"), path.join(dir, "ab"))]);
    for (const [tenant, key] of [[a, "/registry/pods/default/p1"], [a, "/registry/pods/default/p2"], [ab, "/registry/pods/default/p1"]] as const) {
      assert.equal((await tenant.etcdctl(["put", key, tenant.name])).code, 0);
    }
    for (const key of ["/registry/secrets/kube-system/host", "/etcdstorage/a", "/etcdstorage/abc/x"]) assert.equal((await core.etcdctl(["put", key, "host"])).code, 0);
  });
  after(stopAll);

  /** The finalize request once Metacontroller has deleted the proxy Deployment. */
  const deletingRequest = (tenant: RunningTenant, extra: KubeObject[] = []): HookRequest => ({
    ...tenant.request,
    parent: { ...tenant.request.parent, metadata: { ...tenant.request.parent.metadata, deletionTimestamp: new Date().toISOString() } },
    children: observe([...tenant.response.children.filter((c) => c.kind !== "Deployment"), ...extra]),
    finalizing: true,
  });

  const runJob = async (tenant: RunningTenant, job: KubeObject) => {
    const container = await runContainer({
      podSpec: podSpecOf(job as K8sObject),
      containerName: "etcdctl",
      namespace: config.proxyNamespace,
      objects: objectsOf(tenant.request, { status: {}, children: [] }),
      dir: path.join(dir, `${tenant.name}-job-${Date.now()}`),
      // The Job's image is etcd 3.6 (ETCD_IMAGE's default): its etcdctl.
      binaries: { "/usr/local/bin/etcdctl": etcdRelease("3.6").etcdctl },
      ports: {},
    });
    return { ...(await container.exited), logs: container.logs() };
  };

  const keys = async (prefix: string) => (await core.etcdctl(["get", prefix, "--prefix", "--keys-only"])).stdout.split("\n").filter(Boolean).sort();

  test("the Job deletes exactly tenant a's prefix; finalized only after it succeeded", async () => {
    const proxyStillThere = await finalize({ ...deletingRequest(a), children: observe(a.response.children) }, config, new Date());
    assert.deepEqual(proxyStillThere.response.children, [], "no Job while the proxy Deployment exists");

    await a.proxy.gateway.stop();
    const { response } = await finalize(deletingRequest(a), config, new Date());
    assert.equal(response.finalized, false);
    const job = response.children.find((c) => c.kind === "Job")!;
    const exit = await runJob(a, job);
    assert.equal(exit.code, 0, exit.logs);

    assert.deepEqual(await keys("/etcdstorage/a/"), [], "tenant a's prefix is empty");
    assert.deepEqual(await keys("/etcdstorage/ab/"), ["/etcdstorage/ab//registry/pods/default/p1"], "tenant ab is intact");
    assert.deepEqual((await core.etcdctl(["get", "/etcdstorage/a", "--print-value-only"])).stdout.trim(), "host", "/etcdstorage/a (no slash) is intact");
    assert.deepEqual(await keys("/etcdstorage/abc/"), ["/etcdstorage/abc/x"]);
    assert.deepEqual(await keys("/registry/"), ["/registry/secrets/kube-system/host"]);

    const succeeded = { ...job, status: { succeeded: 1, conditions: [{ type: "Complete", status: "True" }] } };
    const done = await finalize(deletingRequest(a, [succeeded]), config, new Date());
    assert.equal(done.response.finalized, true);
  });

  test("with core etcd down the Job fails, and finalize keeps the finalizer and says why", async () => {
    await ab.proxy.gateway.stop();
    const job = (await finalize(deletingRequest(ab), config, new Date())).response.children.find((c) => c.kind === "Job")!;
    await core.stop();
    let exit;
    try {
      exit = await runJob(ab, job);
    } finally {
      await core.start();
    }
    assert.notEqual(exit.code, 0, "etcdctl fails without etcd");
    // What the Job controller records once the pod's retries are exhausted.
    const failed = { ...job, status: { failed: 5, conditions: [{ type: "Failed", status: "True", reason: "BackoffLimitExceeded", message: "Job has reached the specified backoff limit", lastTransitionTime: new Date().toISOString() }] } };
    const { response } = await finalize(deletingRequest(ab, [failed]), config, new Date());
    assert.equal(response.finalized, false);
    const cleanup = ((response.status as any).conditions as { type: string; status: string; reason: string; message: string }[]).find((c) => c.type === "Cleanup")!;
    assert.equal(cleanup.status, "False");
    assert.equal(cleanup.reason, "CleanupFailed");
    assert.match(cleanup.message, /BackoffLimitExceeded/);
    assert.deepEqual(await keys("/etcdstorage/ab/"), ["/etcdstorage/ab//registry/pods/default/p1"], "nothing was deleted");
  });
});
