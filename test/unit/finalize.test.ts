// The finalize sequence from observed states: proxy present → proxy absent → Job running →
// Job succeeded / failed; Retain; idempotence; the prefix is computed, never read.
import assert from "node:assert/strict";
import { test } from "node:test";
import { cleanupCommand, cleanupPrefix } from "../../hooks/children/cleanup-job.ts";
import { finalize } from "../../hooks/finalize.ts";
import type { HookResponse, KubeObject } from "../../hooks/observed.ts";
import { etcdStorage, nextRequest, observe, SAMPLE_SPEC, testConfig } from "../support/requests.ts";

const config = testConfig();
const ns = config.proxyNamespace;
const now = new Date("2027-06-01T00:00:00Z");
const deleting = (spec: Record<string, unknown> = SAMPLE_SPEC) => etcdStorage("a", spec, { metadata: { name: "a", uid: "uid-a", generation: 2, deletionTimestamp: "2027-06-01T00:00:00Z" } });
const proxyDeployment: KubeObject = { apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "etcd-a", namespace: ns } };
const request = (children: KubeObject[], spec?: Record<string, unknown>) => ({ parent: deleting(spec), children: observe(children), related: {}, finalizing: true });
const cleanup = (response: HookResponse) => ((response.status as any).conditions as { type: string; status: string; reason: string; message: string }[]).find((c) => c.type === "Cleanup")!;
const jobWith = (job: KubeObject, conditions: object[]): KubeObject => ({ ...job, status: { conditions } });

test("1. while the proxy Deployment exists, nothing but its removal is desired", async () => {
  const { response } = await finalize(request([proxyDeployment]), config, now);
  assert.deepEqual(response.children, []);
  assert.equal(response.finalized, false);
  assert.equal(cleanup(response).reason, "StoppingProxy");
});

test("2. once the proxy is gone, the cleanup Job deletes exactly the tenant's prefix with etcdctl, no shell", async () => {
  const { response } = await finalize(request([]), config, now);
  assert.equal(response.finalized, false);
  assert.equal(response.children.length, 1);
  const job = response.children[0]!;
  assert.equal(job.kind, "Job");
  assert.equal(job.metadata.namespace, ns);
  const container = (job.spec as any).template.spec.containers[0];
  assert.deepEqual(container.command, [
    "/usr/local/bin/etcdctl",
    "--endpoints=https://10.0.0.1:2379",
    "--cacert=/etc/etcd-proxy/core-ca/ca.crt",
    "--cert=/etc/etcd-proxy/core-client/tls.crt",
    "--key=/etc/etcd-proxy/core-client/tls.key",
    "--dial-timeout=10s",
    "--command-timeout=30s",
    "del",
    "--prefix=true",
    "/etcdstorage/a/",
  ]);
  assert.equal(container.args, undefined);
  assert.equal(cleanup(response).reason, "CleanupRunning");
});

test("3. running Job: not finalized; succeeded Job: finalized", async () => {
  const job = (await finalize(request([]), config, now)).response.children[0]!;
  const running = (await finalize(request([jobWith(job, [])]), config, now)).response;
  assert.equal(running.finalized, false);
  assert.deepEqual(running.children, [job]);
  const done = (await finalize(request([jobWith(job, [{ type: "Complete", status: "True" }])]), config, now)).response;
  assert.equal(done.finalized, true);
  assert.equal(cleanup(done).status, "True");
  assert.equal(cleanup(done).reason, "KeysDeleted");
});

test("4. a failed Job keeps the finalizer, reports the Job's message, and is replaced after a pause", async () => {
  const job = (await finalize(request([]), config, now)).response.children[0]!;
  const failedAt = new Date(now.getTime() - 10_000).toISOString();
  const failed = jobWith(job, [{ type: "Failed", status: "True", reason: "BackoffLimitExceeded", message: "Job has reached the specified backoff limit", lastTransitionTime: failedAt }]);
  const response = (await finalize(request([failed]), config, now)).response;
  assert.equal(response.finalized, false);
  const condition = cleanup(response);
  assert.equal(condition.status, "False");
  assert.equal(condition.reason, "CleanupFailed");
  assert.match(condition.message, /BackoffLimitExceeded: Job has reached the specified backoff limit/);
  assert.deepEqual(response.children, [job], "kept for the retry delay, so the failure stays visible");
  assert.equal(response.resyncAfterSeconds, 50);
  const later = (await finalize(request([failed]), config, new Date(now.getTime() + 60_000))).response;
  assert.deepEqual(later.children, [], "then omitted, so Metacontroller deletes it and the next call creates a fresh Job");
  assert.equal(later.finalized, false);
  const retried = (await finalize(request([]), config, new Date(now.getTime() + 61_000))).response;
  assert.deepEqual(retried.children, [job]);
});

test("Retain: the proxy is stopped, no Job, finalized at once", async () => {
  const { response } = await finalize(request([proxyDeployment], { ...SAMPLE_SPEC, deletionPolicy: "Retain" }), config, now);
  assert.equal(response.finalized, true);
  assert.deepEqual(response.children, []);
  assert.equal(cleanup(response).reason, "Retained");
});

test("an unreadable deletionPolicy deletes nothing and says how to finish", async () => {
  const { response } = await finalize(request([], { deletionPolicy: "retain" }), config, now);
  assert.equal(response.finalized, false);
  assert.deepEqual(response.children, []);
  assert.equal(cleanup(response).reason, "InvalidDeletionPolicy");
});

test("idempotent: after finalized, finalized again (even when the Job is gone)", async () => {
  const job = (await finalize(request([]), config, now)).response.children[0]!;
  const first = request([jobWith(job, [{ type: "Complete", status: "True" }])]);
  const done = (await finalize(first, config, now)).response;
  assert.equal(done.finalized, true);
  const again = (await finalize({ ...nextRequest(first, done), children: observe([]) }, config, now)).response;
  assert.equal(again.finalized, true);
  assert.deepEqual(again.children, []);
});

test("the prefix: computed from root and name, strictly inside the root", () => {
  assert.equal(cleanupPrefix("a", config), "/etcdstorage/a/");
  const parent = deleting();
  parent.status = { prefix: "/registry/" } as never;
  assert.ok(!JSON.stringify(cleanupCommand("a", config)).includes("/registry/"), "status.prefix is never read");
  for (const hostile of ["", "..", "a/b", "A", "-a", "registry/x", "a*"]) {
    assert.throws(() => cleanupPrefix(hostile, config), /refusing to delete/, JSON.stringify(hostile));
  }
});

test("a hostile name never gets a Job", async () => {
  const response = (await finalize({ ...request([]), parent: { ...deleting(), metadata: { name: "a/../..", deletionTimestamp: "x" } } }, config, now)).response;
  assert.deepEqual(response.children, []);
  assert.equal(response.finalized, false);
  assert.equal(cleanup(response).reason, "UnsafePrefix");
  assert.equal((response.status as { prefix?: string }).prefix, undefined, "no prefix is reported for it either");
});
