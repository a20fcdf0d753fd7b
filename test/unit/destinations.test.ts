// Destinations follow the spec: added ones get their credentials, removed ones disappear, and
// the other children stay byte for byte. Only namespaces that exist receive anything.
import assert from "node:assert/strict";
import { before, test } from "node:test";
import { sync } from "../../hooks/sync.ts";
import type { Condition, HookRequest, HookResponse, ObjectsByType } from "../../hooks/observed.ts";
import { coreRelated, etcdStorage, makeCorePki, namespacesRelated, nextRequest, syncRequest, testConfig } from "../support/requests.ts";

const config = testConfig();
const now = new Date("2027-06-01T00:00:00Z");
let core: ObjectsByType;
let related: HookRequest["related"];
before(async () => {
  core = coreRelated(config, await makeCorePki(new Date("2027-01-01T00:00:00Z"), 2));
  // What Metacontroller sends once /customize asked for the destinations' Namespaces.
  related = { ...core, ...namespacesRelated(["a", "b"]) };
});
const one = { caCertConfigMap: [{ name: "ca", namespace: "a" }], clientCertSecret: [{ name: "client", namespace: "a" }] };
const names = (children: { kind: string; metadata: { namespace?: string; name: string } }[]) => children.filter((c) => c.metadata.namespace !== config.proxyNamespace).map((c) => `${c.kind} ${c.metadata.namespace}/${c.metadata.name}`).sort();

test("adding, removing and renaming destinations", async () => {
  const request = syncRequest(etcdStorage("t", one), related);
  const first = (await sync(request, config, now)).response;

  const withB = { caCertConfigMap: [...one.caCertConfigMap, { name: "ca", namespace: "b" }], clientCertSecret: [...one.clientCertSecret, { name: "client", namespace: "b" }] };
  const added = (await sync({ ...nextRequest(request, first), parent: etcdStorage("t", withB) }, config, now)).response;
  assert.deepEqual(names(added.children), ["ConfigMap a/ca", "ConfigMap b/ca", "Secret a/client", "Secret b/client"]);
  const same = (kind: string, ns: string, name: string) => (r: typeof first) => r.children.find((c) => c.kind === kind && c.metadata.namespace === ns && c.metadata.name === name);
  assert.deepEqual(same("Secret", "a", "client")(added), same("Secret", "a", "client")(first), "the existing destination is untouched");
  assert.deepEqual(same("Deployment", config.proxyNamespace, "etcd-t")(added), same("Deployment", config.proxyNamespace, "etcd-t")(first), "the proxy does not roll");

  const renamed = { caCertConfigMap: [{ name: "ca2", namespace: "a" }], clientCertSecret: [{ name: "client2", namespace: "a" }] };
  const afterRename = (await sync({ ...nextRequest(request, added), parent: etcdStorage("t", renamed) }, config, now)).response;
  assert.deepEqual(names(afterRename.children), ["ConfigMap a/ca2", "Secret a/client2"], "removed destinations are omitted (so deleted), renamed ones issued anew");
  const status = afterRename.status as { certificates: { secret: string }[] };
  assert.deepEqual(status.certificates.filter((c) => !c.secret.startsWith(config.proxyNamespace)).map((c) => c.secret), ["a/client2"]);
});

const two = {
  caCertConfigMap: [{ name: "ca", namespace: "a" }, { name: "ca", namespace: "b" }, { name: "ca", namespace: "c" }],
  clientCertSecret: [{ name: "client", namespace: "a" }, { name: "client", namespace: "c" }],
};
const condition = (response: HookResponse, type: string) => (response.status.conditions as Condition[]).find((c) => c.type === type)!;

/** The next request, with the proxy Deployment up, so that Ready speaks of nothing else. */
function proxyUp(request: HookRequest): HookRequest {
  const deployment = Object.values(request.children["Deployment.apps/v1"]!)[0]!;
  deployment.status = { availableReplicas: 2, conditions: [{ type: "Available", status: "True", reason: "MinimumReplicasAvailable" }] };
  return request;
}

async function withProxyAvailable(request: HookRequest): Promise<HookRequest> {
  return proxyUp(nextRequest(request, (await sync(request, config, now)).response));
}

test("a missing destination namespace: named in DestinationsReady and Ready, nothing sent into it, the others delivered", async () => {
  const request = await withProxyAvailable(syncRequest(etcdStorage("t", two), { ...core, ...namespacesRelated(["a", "d"]) }));
  const response = (await sync(request, config, now)).response;
  assert.deepEqual(names(response.children), ["ConfigMap a/ca", "Secret a/client"]);
  const destinations = condition(response, "DestinationsReady");
  assert.deepEqual([destinations.status, destinations.reason], ["False", "NamespaceNotFound"]);
  assert.equal(destinations.message, "2 namespaces b, c do not exist: create them or remove their destinations. Nothing is sent there; the destinations in a are delivered");
  const ready = condition(response, "Ready");
  assert.deepEqual([ready.status, ready.reason, ready.message], ["False", "NamespaceNotFound", `DestinationsReady: ${destinations.message}`]);
  const certificates = (response.status as { certificates: { secret: string }[] }).certificates.map((c) => c.secret).filter((s) => !s.startsWith(config.proxyNamespace));
  assert.deepEqual(certificates, ["a/client"], "no certificate is issued for a namespace that does not exist");
});

test("a namespace that appears later receives its destinations; nothing else changes", async () => {
  const before = await withProxyAvailable(syncRequest(etcdStorage("t", one), { ...core, ...namespacesRelated([]) }));
  const missing = (await sync(before, config, now)).response;
  assert.deepEqual(names(missing.children), []);
  assert.equal(condition(missing, "DestinationsReady").message, "namespace a does not exist: create it or remove its destinations. Nothing is sent there; no destination is delivered");
  const created = (await sync({ ...proxyUp(nextRequest(before, missing)), related }, config, now)).response;
  assert.deepEqual(names(created.children), ["ConfigMap a/ca", "Secret a/client"]);
  assert.deepEqual([condition(created, "DestinationsReady").status, condition(created, "DestinationsReady").reason, condition(created, "DestinationsReady").message], ["True", "DestinationsDelivered", "credentials delivered to namespace a"]);
  assert.equal(condition(created, "Ready").status, "True");
  const proxyChildren = (r: HookResponse) => r.children.filter((c) => c.metadata.namespace === config.proxyNamespace);
  assert.deepEqual(proxyChildren(created), proxyChildren(missing), "the proxy and the CAs stay as they were");
});

test("a namespace being deleted receives nothing more", async () => {
  const terminating = namespacesRelated(["a", "b", "c"]);
  terminating["Namespace.v1"]!.c!.metadata.deletionTimestamp = "2027-05-31T00:00:00Z";
  const response = (await sync(syncRequest(etcdStorage("t", two), { ...core, ...terminating }), config, now)).response;
  assert.deepEqual(names(response.children), ["ConfigMap a/ca", "ConfigMap b/ca", "Secret a/client"]);
  const destinations = condition(response, "DestinationsReady");
  assert.deepEqual([destinations.status, destinations.reason], ["False", "NamespaceTerminating"]);
  assert.match(destinations.message, /^namespace c is being deleted\. Nothing is sent there; the destinations in a, b are delivered$/);
});

test("no Namespaces in the request (Metacontroller's cached /customize answer predates them): delivered as before, and said so", async () => {
  const response = (await sync(syncRequest(etcdStorage("t", two), core), config, now)).response;
  assert.deepEqual(names(response.children), ["ConfigMap a/ca", "ConfigMap b/ca", "ConfigMap c/ca", "Secret a/client", "Secret c/client"]);
  const destinations = condition(response, "DestinationsReady");
  assert.deepEqual([destinations.status, destinations.reason], ["Unknown", "NamespacesNotObserved"]);
  assert.match(destinations.message, /credentials are sent to a, b, c unchecked$/);
});

test("no destinations at all: nothing to check", async () => {
  const response = (await sync(syncRequest(etcdStorage("t", {}), core), config, now)).response;
  assert.deepEqual([condition(response, "DestinationsReady").status, condition(response, "DestinationsReady").reason], ["True", "NoDestinations"]);
});
