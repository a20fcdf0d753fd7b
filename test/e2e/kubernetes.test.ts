// The seeds' demonstration, on real parts only (test/e2e/system.ts says what stands in for the
// kubelet, the controllers and Metacontroller): the real kube-apiserver accepts manifests/ and
// every child the hooks return; sample-apiserver stores Flunders through the tenant's gateway,
// under the tenant's prefix of core etcd and nowhere else; deleting the EtcdStorage deletes
// exactly those keys, and with deletionPolicy Retain a new EtcdStorage serves them again. On
// each etcd line clusters run (3.6 and 3.5).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { load as loadYaml } from "js-yaml";
import { connect, type EtcdClient, type KeyValue } from "../support/etcd-client.ts";
import { everyKey } from "./gateway-kit.ts";
import { ETCD_LINES, stopAll, tempDir } from "./harness.ts";
import type { KubeObject } from "./kube.ts";
import { collectGarbage, markJobComplete, PROXY_NAMESPACE, REPO_ROOT, runPod, startSampleApiserver, startSystem, startTenant, type RunningSystem, type RunningTenant, type SampleApiserver } from "./system.ts";

const TENANT = "sample-apiserver";
const PREFIX = `/etcdstorage/${TENANT}/`;
// sample-apiserver's own key of a Flunder: its --etcd-prefix, then the group's resource path.
const flunderKey = (namespace: string, name: string) => `/registry/wardle.example.com/wardle.example.com/flunders/${namespace}/${name}`;
const FLUNDERS = "/apis/wardle.example.com/v1alpha1/namespaces/default/flunders";
const EXAMPLE = loadYaml(readFileSync(path.join(REPO_ROOT, "manifests/example-etcdstorage.yaml"), "utf8")) as KubeObject;
// What the host kube-apiserver itself keeps writing while it runs (its lease heartbeats and peer
// aggregator's APIService status, Events): the only core keys outside the tenant's prefix that
// may change while the tenant works.
const HOST_OWN_WRITES = /^\/registry\/(leases|peerserverleases|masterleases|apiregistration\.k8s\.io\/apiservices|events)\//;

const text = (bytes: Buffer | Uint8Array) => Buffer.from(bytes).toString("latin1");

function fingerprint(kv: KeyValue): string {
  return JSON.stringify([kv.create_revision, kv.mod_revision, kv.version, kv.lease, Buffer.from(kv.value).toString("base64")]);
}

/** Keys outside the prefix that were added, removed or changed between two snapshots. */
function changedOutside(before: KeyValue[], after: KeyValue[]): string[] {
  const outside = (kvs: KeyValue[]) => new Map(kvs.filter((kv) => !text(kv.key).startsWith(PREFIX)).map((kv) => [text(kv.key), fingerprint(kv)]));
  const [a, b] = [outside(before), outside(after)];
  return [...new Set([...a.keys(), ...b.keys()])].filter((key) => a.get(key) !== b.get(key)).sort();
}

/** The CRD's CEL rules, each with where it sits in the schema and its message. */
function celRules(crd: KubeObject): Array<{ at: string; message: string }> {
  const rules: Array<{ at: string; message: string }> = [];
  const walk = (node: Record<string, unknown> | undefined, at: string): void => {
    if (node === undefined) return;
    // Transition rules (oldSelf) judge updates only: test/e2e/kubernetes-backup.test.ts updates for them.
    for (const rule of (node["x-kubernetes-validations"] ?? []) as Array<{ rule: string; message: string; fieldPath?: string }>) if (!rule.rule.includes("oldSelf")) rules.push({ at: `${at}${rule.fieldPath ?? ""}`, message: rule.message });
    for (const [name, child] of Object.entries((node.properties ?? {}) as Record<string, Record<string, unknown>>)) walk(child, `${at}.${name}`);
  };
  walk((crd.spec as { versions: Array<{ schema: { openAPIV3Schema: Record<string, unknown> } }> }).versions[0]!.schema.openAPIV3Schema, "");
  return rules;
}

// One invalid EtcdStorage for each rule, by where the rule applies (its place in the schema and
// its fieldPath) and its order among the rules that apply there: a relation between two fields is
// declared on their parent, before the field's own format rule.
const INVALID: Record<string, { name?: string; spec: Record<string, unknown> }> = {
  // A valid object name, but not a DNS-1035 label (the schema's maxLength answers a longer one first).
  "#0": { name: "tenant.one", spec: {} },
  ".spec.servingCertificateValidity#0": { spec: { signingCertificateValidity: "720h", servingCertificateValidity: "8760h" } },
  ".spec.clientCertificateValidity#0": { spec: { signingCertificateValidity: "720h", clientCertificateValidity: "8760h" } },
  ".spec.signingCertificateValidity#0": { spec: { signingCertificateValidity: "5m" } },
  ".spec.servingCertificateValidity#1": { spec: { servingCertificateValidity: "1d" } },
  ".spec.clientCertificateValidity#1": { spec: { clientCertificateValidity: "ten hours" } },
  ".spec.resources.requests.cpu#0": { spec: { resources: { requests: { cpu: "2" }, limits: { cpu: "1" } } } },
  ".spec.resources.requests.memory#0": { spec: { resources: { requests: { memory: "1Gi" }, limits: { memory: "512Mi" } } } },
  ".spec.resources.requests.cpu#1": { spec: { resources: { requests: { cpu: "lots" } } } },
  ".spec.resources.requests.memory#1": { spec: { resources: { requests: { memory: "64 MiB" } } } },
  ".spec.resources.limits.cpu#0": { spec: { resources: { limits: { cpu: "1 core" } } } },
  ".spec.resources.limits.memory#0": { spec: { resources: { limits: { memory: "1GB!" } } } },
  ".spec.quota.storage#0": { spec: { quota: { storage: "9Gi" } } },
  ".spec.quota.writeBytesPerSecond#0": { spec: { quota: { writeBytesPerSecond: "32Mi" } } },
  ".spec.dataSource.backup#0": { spec: { dataSource: { backup: "Nightly" } } },
  ".spec.backup.schedule#0": { spec: { backup: { schedule: "every night", volumeClaim: "backups" } } },
  ".spec.backup.keep#0": { spec: { backup: { schedule: "0 3 * * *", keep: 0, volumeClaim: "backups" } } },
  ".spec.backup.volumeClaim#0": { spec: { backup: { schedule: "0 3 * * *", volumeClaim: "Backups_Volume" } } },
};

for (const line of ETCD_LINES) describe(`real Kubernetes on both sides: kube-apiserver, the hooks, the gateway and sample-apiserver, on etcd ${line}`, () => {
  let dir: string;
  let system: RunningSystem;
  let core: EtcdClient;

  before(async () => {
    dir = await tempDir("kubernetes-");
    system = await startSystem(dir, { line });
    core = connect(system.host.core.endpoint, { ...system.host.core.tls, servername: "localhost" });
  });

  after(async () => {
    core?.close();
    system?.host.api.close();
    await stopAll();
  });

  const kubectl = (args: string[], input?: string) => system.host.kubectl(args, input);
  const flunder = (name: string, spec: Record<string, unknown> = {}) => ({ apiVersion: "wardle.example.com/v1alpha1", kind: "Flunder", metadata: { name, namespace: "default" }, spec });

  test("the API server accepts the CRD, and answers every CEL rule with the schema's own message", async () => {
    const crd = await system.host.api.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "etcdstorages.etcdproxy.dev");
    assert.ok(crd, "the CRD is installed");
    const rules = celRules(crd);
    assert.equal(rules.length, Object.keys(INVALID).length, `one invalid EtcdStorage per rule: ${rules.map((r) => r.at).join(", ")}`);
    const seen = new Map<string, number>();
    for (const rule of rules) {
      const order = seen.get(rule.at) ?? 0;
      seen.set(rule.at, order + 1);
      const invalid = INVALID[`${rule.at}#${order}`];
      assert.ok(invalid, `an invalid EtcdStorage for rule ${order} at ${rule.at}: ${rule.message}`);
      const object = { ...EXAMPLE, metadata: { name: invalid.name ?? "invalid" }, spec: { ...(EXAMPLE.spec as object), ...invalid.spec } };
      const { code, stderr } = await kubectl(["create", "--dry-run=server", "-f", "-"], JSON.stringify(object));
      assert.notEqual(code, 0, `the server refuses ${JSON.stringify(object.spec)}`);
      assert.ok(stderr.includes(rule.message.trim()), `the refusal of ${JSON.stringify(object)} carries the schema's message ${JSON.stringify(rule.message)}; it said: ${stderr}`);
    }
  });

  let tenant: RunningTenant;
  let sample: SampleApiserver;

  test("every child the hooks return is accepted, and a second sync over the server's objects changes nothing", async () => {
    assert.equal((await kubectl(["create", "namespace", "sample-system"])).code, 0);
    const applied = await kubectl(["apply", "-f", path.join(REPO_ROOT, "manifests/example-etcdstorage.yaml")]);
    assert.equal(applied.code, 0, applied.stderr);
    assert.equal(applied.stderr, "", "no warning");
    tenant = await startTenant(system, TENANT, path.join(dir, "gateway-1"));
    const ready = (tenant.last.answer.status.conditions as Array<{ type: string; status: string }>).find((c) => c.type === "Ready");
    assert.equal(ready?.status, "True", JSON.stringify(tenant.last.answer.status));
    // Metacontroller's next sync sees what the server holds (defaulted, with its own fields).
    const again = await system.metacontroller.reconcile(TENANT);
    assert.deepEqual(again.changes, [], "no child changes on a second sync");
    assert.equal(again.statusWritten, false, "the status is unchanged on a second sync");
    const kinds = Object.entries(again.request.children).map(([type, byName]) => `${type}: ${Object.keys(byName).length}`);
    for (const type of ["Deployment.apps/v1", "Service.v1", "PodDisruptionBudget.policy/v1", "Secret.v1", "ConfigMap.v1"]) {
      assert.ok(Object.keys(again.request.children[type] ?? {}).length > 0, `the server holds the ${type} children (${kinds.join(", ")})`);
    }
    // No admission plugin had a word for them: PodSecurity's restricted profile (which the proxy
    // namespace enforces, and which warns on a Deployment's pod template), deprecated APIs.
    assert.deepEqual(system.host.api.warnings, []);
    // Status went through the status subresource, with observedGeneration.
    const parent = await system.host.api.get("etcdproxy.dev/v1alpha1", "EtcdStorage", TENANT);
    assert.equal((parent!.status as { observedGeneration?: number }).observedGeneration, parent!.metadata.generation);
  });

  test("kubectl get etcdstorages shows the printer columns (the prefix with -o wide)", async () => {
    const table = async (args: string[]) => {
      const { code, stdout, stderr } = await kubectl(["get", "etcdstorages", ...args]);
      assert.equal(code, 0, stderr);
      return stdout.trim().split("\n").map((line) => line.trim().split(/\s+/));
    };
    const endpoint = `https://etcd-${TENANT}.${PROXY_NAMESPACE}.svc:2379`;
    const [header, row] = await table([]);
    assert.deepEqual(header, ["NAME", "READY", "REASON", "QUOTA", "ENDPOINT", "AGE"]);
    assert.deepEqual(row!.slice(0, 5), [TENANT, "True", "TenantReady", "256Mi", endpoint]);
    const [wideHeader, wideRow] = await table(["-o", "wide"]);
    assert.deepEqual(wideHeader, ["NAME", "READY", "REASON", "QUOTA", "ENDPOINT", "PREFIX", "AGE"]);
    assert.deepEqual(wideRow!.slice(0, 6), [TENANT, "True", "TenantReady", "256Mi", endpoint, PREFIX]);
  });

  let coreBefore: KeyValue[];

  test("a Flunder created through the host lies under the tenant's prefix, and no other core key changes", async () => {
    sample = await startSampleApiserver(system, tenant, { namespace: "sample-system", secret: "etcd-client-cert", configMap: "etcd-serving-ca", dir: path.join(dir, "sample-apiserver-1") });
    const sentinels = ["/etcdstorage/sample-apiserver-2/registry/x", "/etcdstorage/sample-apiserverx", "/other/key"];
    for (const key of sentinels) await core.kv.put({ key, value: `sentinel ${key}` });
    coreBefore = await everyKey(core);
    const created = await kubectl(["create", "-f", "-"], JSON.stringify(flunder("my-flunder")));
    assert.equal(created.code, 0, created.stderr);
    const after = await everyKey(core);
    const stored = after.find((kv) => text(kv.key) === `${PREFIX}${flunderKey("default", "my-flunder")}`);
    assert.ok(stored, `the Flunder's key is the prefix followed by sample-apiserver's own key; core holds ${after.map((kv) => text(kv.key)).filter((k) => k.includes("flunder")).join(", ")}`);
    assert.deepEqual(after.filter((kv) => text(kv.key).includes("flunders")).map((kv) => text(kv.key)), [text(stored.key)], "no Flunder key anywhere else");
    assert.deepEqual(changedOutside(coreBefore, after).filter((key) => !HOST_OWN_WRITES.test(key)), [], "core keys outside the prefix are byte-identical");
    for (const key of sentinels) assert.ok(after.some((kv) => text(kv.key) === key && text(kv.value) === `sentinel ${key}`));
  });

  test("get, list, watch and delete of Flunders through the host; a consistent list answers without the 3 s fallback", async () => {
    const api = system.host.api;
    const list = await api.call<{ metadata: { resourceVersion: string }; items: KubeObject[] }>("GET", FLUNDERS);
    assert.deepEqual(list.items.map((f) => f.metadata.name), ["my-flunder"]);
    const watch = api.watch(`${FLUNDERS}?watch=1&resourceVersion=${list.metadata.resourceVersion}`);
    try {
      await api.call("POST", FLUNDERS, flunder("second", { reference: "my-flunder" }));
      const added = await watch.next();
      assert.equal(added.type, "ADDED");
      assert.equal(added.object.metadata.name, "second");
      const got = await api.call<KubeObject>("GET", `${FLUNDERS}/second`);
      assert.deepEqual(got.spec, { reference: "my-flunder", referenceType: "Flunder" });
      await api.call("DELETE", `${FLUNDERS}/second`);
      const deleted = await watch.next();
      assert.equal(deleted.type, "DELETED");
      assert.equal(deleted.object.metadata.name, "second");
    } finally {
      watch.close();
    }
    // Consistent lists (no resourceVersion) are served from the watch cache once a progress request
    // through the gateway confirms it current; without an answer each would wait 3 s, then fall back.
    const timings: number[] = [];
    for (let i = 0; i < 5; i++) {
      const started = performance.now();
      const names = (await api.call<{ items: KubeObject[] }>("GET", FLUNDERS)).items.map((f) => f.metadata.name);
      timings.push(performance.now() - started);
      assert.deepEqual(names, ["my-flunder"]);
    }
    assert.ok(Math.max(...timings) < 1_000, `consistent lists took ${timings.map((t) => t.toFixed(0)).join(", ")} ms`);
    const absent = await kubectl(["get", "flunder", "second", "-n", "default"]);
    assert.notEqual(absent.code, 0);
    assert.match(absent.stderr, /NotFound|not found/);
  });

  test("deleting the EtcdStorage stops the gateway, runs the cleanup Job's command and deletes exactly the tenant's keys", async () => {
    await sample.process.stop();
    const beforeDeletion = await everyKey(core);
    const deleted = await kubectl(["delete", "etcdstorage", TENANT, "--wait=false"]);
    assert.equal(deleted.code, 0, deleted.stderr);
    const first = await system.metacontroller.reconcile(TENANT);
    assert.ok(first.request.finalizing);
    assert.ok(first.changes.includes(`Deployment ${PROXY_NAMESPACE}/etcd-${TENANT}: deleted`), `the proxy goes first: ${first.changes.join("; ")}`);
    await tenant.gateway.stop(); // the kubelet, once the Deployment's pods are deleted
    const second = await system.metacontroller.reconcile(TENANT);
    assert.ok(second.changes.includes(`Job ${PROXY_NAMESPACE}/etcd-${TENANT}-cleanup: created`), second.changes.join("; "));
    const started = new Date();
    const job = await runPod(system.host, path.join(dir, "cleanup"), { apiVersion: "batch/v1", kind: "Job", namespace: PROXY_NAMESPACE, name: `etcd-${TENANT}-cleanup` }, "etcdctl", {});
    const exit = await job.exited;
    assert.equal(exit.code, 0, job.logs());
    await markJobComplete(system.host, PROXY_NAMESPACE, `etcd-${TENANT}-cleanup`, started);
    const third = await system.metacontroller.reconcile(TENANT);
    assert.equal(third.answer.finalized, true);
    assert.equal(await system.host.api.get("etcdproxy.dev/v1alpha1", "EtcdStorage", TENANT), undefined, "the finalizer was the last: the EtcdStorage is gone");
    await collectGarbage(system, third.request.parent.metadata.uid!);

    const after = await everyKey(core);
    assert.deepEqual(after.filter((kv) => text(kv.key).startsWith(PREFIX)).map((kv) => text(kv.key)), [], "no key is left under the prefix");
    // Outside the prefix, only the host's own objects of this tenant are gone (the EtcdStorage, its
    // children, its Service's cluster IP), deleted by the host API server as a deletion must be.
    const objects = [first.request.parent, ...Object.values(first.request.children).flatMap((byName) => Object.values(byName))];
    const service = objects.find((o) => o.kind === "Service") as { spec: { clusterIP: string } } | undefined;
    const keysOf = objects.map((o) => new RegExp(`^/registry/(.+/)?${o.kind.toLowerCase()}s/(.+/)?${o.metadata.namespace ? `${o.metadata.namespace}/` : ""}${o.metadata.name}$`));
    const expectedGone = beforeDeletion.map((kv) => text(kv.key)).filter((key) => keysOf.some((pattern) => pattern.test(key)) || key === `/registry/ipaddresses/${service?.spec.clusterIP}`);
    assert.equal(expectedGone.length, objects.length + 1, `every object of the tenant had a key: ${expectedGone.join(", ")}`);
    const changed = changedOutside(beforeDeletion, after).filter((key) => !HOST_OWN_WRITES.test(key));
    assert.deepEqual(changed, expectedGone.sort(), "every other core key outside the prefix is byte-identical");
    assert.ok(changed.every((key) => !after.some((kv) => text(kv.key) === key)), "those keys were deleted, not changed");
  });

  test("with deletionPolicy Retain, a new EtcdStorage of the same name serves the same Flunders", async () => {
    const retained = { ...EXAMPLE, spec: { ...(EXAMPLE.spec as object), deletionPolicy: "Retain" } };
    assert.equal((await kubectl(["apply", "-f", "-"], JSON.stringify(retained))).code, 0);
    const first = await startTenant(system, TENANT, path.join(dir, "gateway-2"));
    const firstSample = await startSampleApiserver(system, first, { namespace: "sample-system", secret: "etcd-client-cert", configMap: "etcd-serving-ca", dir: path.join(dir, "sample-apiserver-2") });
    for (const name of ["kept-1", "kept-2"]) await system.host.api.call("POST", FLUNDERS, flunder(name));
    const stored = (await system.host.api.call<{ items: KubeObject[] }>("GET", FLUNDERS)).items;
    await firstSample.process.stop();

    assert.equal((await kubectl(["delete", "etcdstorage", TENANT, "--wait=false"])).code, 0);
    const finalizing = await system.metacontroller.reconcile(TENANT);
    assert.equal(finalizing.answer.finalized, true, "Retain finalizes at once, with no Job");
    await first.gateway.stop();
    await collectGarbage(system, finalizing.request.parent.metadata.uid!);
    assert.equal((await everyKey(core)).filter((kv) => text(kv.key).includes("flunders/default/kept-")).length, 2, "the keys stay");

    assert.equal((await kubectl(["apply", "-f", "-"], JSON.stringify(retained))).code, 0);
    const second = await startTenant(system, TENANT, path.join(dir, "gateway-3"));
    retainedSample = await startSampleApiserver(system, second, { namespace: "sample-system", secret: "etcd-client-cert", configMap: "etcd-serving-ca", dir: path.join(dir, "sample-apiserver-3") });
    const served = (await system.host.api.call<{ items: KubeObject[] }>("GET", FLUNDERS)).items;
    const identity = (f: KubeObject) => [f.metadata.name, f.metadata.uid, f.metadata.creationTimestamp, JSON.stringify(f.spec)];
    assert.deepEqual(served.map(identity), stored.map(identity));
    retainedTenant = second;
  });

  let retainedTenant: RunningTenant;
  let retainedSample: SampleApiserver;

  test("a spec the hooks refuse changes no child in the server; a valid change is applied in place and the rolled gateway serves the same Flunders", async () => {
    const patch = (spec: object) => kubectl(["patch", "etcdstorage", TENANT, "--type=merge", "-p", JSON.stringify({ spec })]);
    // Valid for the CRD, refused by the hooks: a destination in the proxy namespace.
    assert.equal((await patch({ clientCertSecret: [{ name: "etcd-client-cert", namespace: PROXY_NAMESPACE }] })).code, 0);
    const refused = await system.metacontroller.reconcile(TENANT);
    assert.deepEqual(refused.changes, [], "an invalid spec keeps every child as it is");
    const ready = (refused.answer.status.conditions as Array<{ type: string; status: string; reason: string }>).find((c) => c.type === "Ready");
    assert.deepEqual([ready?.status, ready?.reason], ["False", "InvalidSpec"]);

    assert.equal((await patch({ clientCertSecret: (EXAMPLE.spec as { clientCertSecret: unknown }).clientCertSecret, quota: { requestsPerSecond: 500 }, resources: { limits: { memory: "320Mi" } } })).code, 0);
    const changed = await system.metacontroller.reconcile(TENANT);
    assert.deepEqual(changed.changes, [`Deployment ${PROXY_NAMESPACE}/etcd-${TENANT}: updated`], "the server accepts the changed Deployment in place");
    assert.deepEqual((await system.metacontroller.reconcile(TENANT)).changes, []);

    // The rollout: the old pod goes, a new one runs from the Deployment as the server now holds it.
    await retainedSample.process.stop();
    await retainedTenant.gateway.stop();
    const rolled = await startTenant(system, TENANT, path.join(dir, "gateway-4"));
    assert.ok(rolled.gateway.args.includes("--quota-requests-per-second=500"), rolled.gateway.args.join(" "));
    const sampleAgain = await startSampleApiserver(system, rolled, { namespace: "sample-system", secret: "etcd-client-cert", configMap: "etcd-serving-ca", dir: path.join(dir, "sample-apiserver-4") });
    const names = (await system.host.api.call<{ items: KubeObject[] }>("GET", FLUNDERS)).items.map((f) => f.metadata.name);
    assert.deepEqual(names, ["kept-1", "kept-2"]);
    await sampleAgain.process.stop();
  });
});
