// Destinations follow the spec: added ones get their credentials, removed ones disappear, and
// the other children stay byte for byte.
import assert from "node:assert/strict";
import { before, test } from "node:test";
import { sync } from "../../hooks/sync.ts";
import type { HookRequest } from "../../hooks/observed.ts";
import { coreRelated, etcdStorage, makeCorePki, nextRequest, syncRequest, testConfig } from "../support/requests.ts";

const config = testConfig();
const now = new Date("2027-06-01T00:00:00Z");
let related: HookRequest["related"];
before(async () => {
  related = coreRelated(config, await makeCorePki(new Date("2027-01-01T00:00:00Z"), 2));
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
