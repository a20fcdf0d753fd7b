// A damaged CA Secret is repaired where it can be, and never silently replaced: a CA that clients
// may trust is only succeeded through publication and overlap.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { before, test } from "node:test";
import type { HookRequest, HookResponse } from "../../hooks/observed.ts";
import { sync } from "../../hooks/sync.ts";
import { b64, child, coreRelated, DAY, etcdStorage, makeCorePki, nextRequest, SAMPLE_SPEC, syncRequest, testConfig, unb64 } from "../support/requests.ts";

const config = testConfig();
const ns = config.proxyNamespace;
const T0 = new Date("2027-01-01T00:00:00Z");
let first: { request: HookRequest; response: HookResponse };

before(async () => {
  const request = syncRequest(etcdStorage("t", SAMPLE_SPEC), coreRelated(config, await makeCorePki(new Date(T0.getTime() - DAY), 20)));
  first = { request, response: (await sync(request, config, T0)).response };
});

/** The steady state with one value of the serving CA Secret replaced. */
function damaged(key: string, value: string): HookRequest {
  const request = nextRequest(first.request, first.response);
  const secret = request.children["Secret.v1"]![`${ns}/etcd-t-serving-ca`]!;
  (secret.data as Record<string, string>)[key] = b64(value);
  return request;
}
const data = (response: HookResponse, name: string, namespace = ns) => child(response, "Secret", namespace, name).data as Record<string, string>;
const condition = (response: HookResponse, type: string) => (response.status as { conditions: { type: string; status: string; reason: string }[] }).conditions.find((c) => c.type === type)!;

test("a garbage leaf is re-issued; nothing else changes", async () => {
  const request = nextRequest(first.request, first.response);
  (request.children["Secret.v1"]![`${ns}/etcd-t-server-tls`]!.data as Record<string, string>)["tls.crt"] = b64("garbage");
  const { response, report } = await sync(request, config, new Date(T0.getTime() + DAY));
  assert.ok(new X509Certificate(unb64(data(response, "etcd-t-server-tls")["tls.crt"])).verify(new X509Certificate(unb64(data(response, "etcd-t-serving-ca")["tls.crt"])).publicKey));
  assert.deepEqual(data(response, "etcd-t-serving-ca"), data(first.response, "etcd-t-serving-ca"));
  assert.deepEqual(report.events.map((e) => e.what), ["Unparsable"]);
});

test("a lost tls.crt of a CA is recovered from its bundle, without a new CA", async () => {
  const { response, report } = await sync(damaged("tls.crt", "garbage"), config, new Date(T0.getTime() + DAY));
  assert.deepEqual(data(response, "etcd-t-serving-ca"), data(first.response, "etcd-t-serving-ca"));
  assert.deepEqual(report.events, []);
  assert.equal(condition(response, "CertificatesReady").status, "True");
});

test("a damaged CA key: the old CA stays trusted, a successor is published, leaves are kept, and status says so", async () => {
  const { response } = await sync(damaged("tls.key", "garbage"), config, new Date(T0.getTime() + DAY));
  const ca = data(response, "etcd-t-serving-ca");
  const before = data(first.response, "etcd-t-serving-ca");
  assert.equal(ca["tls.crt"], before["tls.crt"], "the damaged CA is left as it was");
  assert.ok(ca["successor.crt"], "a successor is published");
  assert.equal((unb64(ca["ca.crt"]).match(/BEGIN CERTIFICATE/g) ?? []).length, 2, "both CAs are trusted");
  assert.deepEqual(data(response, "etcd-t-server-tls"), data(first.response, "etcd-t-server-tls"), "the working serving certificate is kept");
  assert.equal((child(response, "ConfigMap", "sample-system", "etcd-serving-ca").data as Record<string, string>)["ca.crt"], unb64(ca["ca.crt"]));
  assert.equal(condition(response, "CertificatesReady").status, "False");
  assert.equal(condition(response, "CertificatesReady").reason, "IssuingCADamaged");
  assert.equal(condition(response, "Ready").status, "False");
});

test("a CA Secret emptied by hand is not silently replaced while its bundle is trusted", async () => {
  const request = nextRequest(first.request, first.response);
  const secret = request.children["Secret.v1"]![`${ns}/etcd-t-client-ca`]!;
  const bundle = (secret.data as Record<string, string>)["ca.crt"]!;
  secret.data = { "ca.crt": bundle };
  const { response } = await sync(request, config, new Date(T0.getTime() + DAY));
  const ca = data(response, "etcd-t-client-ca");
  assert.ok(ca["successor.crt"]);
  assert.equal((unb64(ca["ca.crt"]).match(/BEGIN CERTIFICATE/g) ?? []).length, 2, "the old CA stays in the bundle the proxy trusts");
  assert.deepEqual(data(response, "etcd-client-cert", "sample-system")["tls.crt"], data(first.response, "etcd-client-cert", "sample-system")["tls.crt"]);
});
