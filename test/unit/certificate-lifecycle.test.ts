// The tenant's certificates over time, with a moved clock: GIVEN an answer fed back as observed
// state at a later time, WHEN the hook runs, THEN exactly the due step happens.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { before, describe, test } from "node:test";
import { sync } from "../../hooks/sync.ts";
import type { HookRequest, HookResponse } from "../../hooks/observed.ts";
import { child, coreRelated, DAY, etcdStorage, makeCorePki, nextRequest, syncRequest, testConfig, unb64, QUARTERLY_SPEC } from "../support/requests.ts";
import { splitPemBundle } from "../../hooks/pki/parse.ts";

const config = testConfig();
const ns = config.proxyNamespace;
const T0 = new Date("2027-01-01T00:00:00Z");
const at = (days: number) => new Date(T0.getTime() + days * DAY);
const SPEC = QUARTERLY_SPEC;

let related: HookRequest["related"];
before(async () => {
  related = coreRelated(config, await makeCorePki(new Date(T0.getTime() - DAY), 5));
});

const caSecret = (r: HookResponse) => child(r, "Secret", ns, "etcd-t-serving-ca").data as Record<string, string>;
const serving = (r: HookResponse) => new X509Certificate(unb64((child(r, "Secret", ns, "etcd-t-server-tls").data as Record<string, string>)["tls.crt"]));
const client = (r: HookResponse) => new X509Certificate(unb64((child(r, "Secret", "team-a", "etcd-client").data as Record<string, string>)["tls.crt"]));
const bundle = (r: HookResponse) => splitPemBundle((child(r, "ConfigMap", "team-a", "etcd-ca").data as Record<string, string>)["ca.crt"]).map((pem) => new X509Certificate(pem));
const trustedClientCas = (r: HookResponse) => splitPemBundle((child(r, "ConfigMap", ns, "etcd-t-trusted-ca").data as Record<string, string>)["ca.crt"]).length;
const issuingCa = (r: HookResponse) => new X509Certificate(unb64(caSecret(r)["tls.crt"]));
const issuingClientCa = (r: HookResponse) => new X509Certificate(unb64((child(r, "Secret", ns, "etcd-t-client-ca").data as Record<string, string>)["tls.crt"]));
const deployment = (r: HookResponse) => child(r, "Deployment", ns, "etcd-t");

/** Runs the hook at `now` on the previous answer, and checks the new answer is a fixed point. */
async function step(previous: { request: HookRequest; response: HookResponse }, now: Date) {
  const request = nextRequest(previous.request, previous.response);
  const { response } = await sync(request, config, now);
  const again = await sync(nextRequest(request, response), config, now);
  assert.deepEqual(again.response.children, response.children, `the answer at ${now.toISOString()} is not a fixed point`);
  assert.deepEqual(again.response.status, response.status, `the status at ${now.toISOString()} is not a fixed point`);
  return { request, response };
}

describe("certificate lifecycle", () => {
  test("renewal at 2/3, CA rotation with overlap, pruning of expired CAs", async () => {
    const first = { request: syncRequest(etcdStorage("t", SPEC), related), response: (await sync(syncRequest(etcdStorage("t", SPEC), related), config, T0)).response };
    const initialCa = issuingCa(first.response);
    assert.equal(first.response.resyncAfterSeconds, 24 * 3600, "the next step is months away: resync is capped at a day");

    // 1/2 of the leaves' lifetime: nothing changes, byte for byte.
    const half = await step(first, at(15));
    assert.deepEqual(half.response.children, first.response.children);

    // Past 2/3 of the leaves' lifetime: re-issued by the same CA; the CA Secret is untouched.
    const renewed = await step(half, at(20.5));
    assert.notEqual(serving(renewed.response).serialNumber, serving(first.response).serialNumber);
    assert.notEqual(client(renewed.response).serialNumber, client(first.response).serialNumber);
    assert.ok(serving(renewed.response).verify(initialCa.publicKey));
    assert.deepEqual(caSecret(renewed.response), caSecret(first.response));
    assert.deepEqual(deployment(renewed.response), deployment(first.response), "a renewal does not roll the gateways: they reload their files");

    // The CA past 2/3: a successor is published in every bundle, next to the old CA; leaves stay.
    const published = await step(await step(renewed, at(40.5)), at(60.5));
    assert.ok(caSecret(published.response)["successor.crt"], "successor stored beside the issuing CA");
    assert.equal(bundle(published.response).length, 2, "destination bundle holds old and new serving CA");
    assert.equal(trustedClientCas(published.response), 2, "the proxy trusts old and new client CA");
    assert.ok(serving(published.response).verify(initialCa.publicKey), "leaves are still issued by the old CA");
    assert.ok(client(published.response).verify(issuingClientCa(renewed.response).publicKey), "client certificates too");
    assert.equal(issuingCa(published.response).fingerprint256, initialCa.fingerprint256);
    assert.deepEqual(deployment(published.response), deployment(renewed.response), "nor does a new trusted client CA");
    const certificates = (published.response.status as any).certificates as { name: string; role: string; renewAt: string }[];
    const successor = certificates.find((c) => c.name === "serving-ca" && c.role === "Successor")!;
    // overlap = min(90d/6, (day 90 - day 60.5)/2) = 14.75 days
    assert.equal(successor.renewAt, at(60.5 + 14.75).toISOString().replace(".000Z", "Z"));

    // Still in the overlap: leaves stay on the old CA.
    const during = await step(published, at(70));
    assert.ok(serving(during.response).verify(initialCa.publicKey));

    // After the overlap: leaves move to the successor; the old CA stays trusted until it expires.
    const moved = await step(during, at(75.5));
    const newCa = issuingCa(moved.response);
    assert.notEqual(newCa.fingerprint256, initialCa.fingerprint256);
    assert.equal(caSecret(moved.response)["successor.crt"], undefined);
    assert.ok(serving(moved.response).verify(newCa.publicKey), "serving certificate from the new CA");
    assert.ok(client(moved.response).verify(issuingClientCa(moved.response).publicKey));
    assert.ok(!client(moved.response).verify(issuingClientCa(renewed.response).publicKey), "client certificate moved to the new client CA");
    assert.equal(bundle(moved.response).length, 2, "old CA still trusted while it is valid");

    // The old CA expired: it leaves every bundle.
    const pruned = await step(moved, at(90.01));
    assert.equal(bundle(pruned.response).length, 1);
    assert.equal(bundle(pruned.response)[0]!.fingerprint256, newCa.fingerprint256);
    assert.equal(trustedClientCas(pruned.response), 1);
  });

  test("resyncAfterSeconds is the time to the next step", async () => {
    const first = { request: syncRequest(etcdStorage("t", SPEC), related), response: (await sync(syncRequest(etcdStorage("t", SPEC), related), config, T0)).response };
    const late = await step(first, at(19.5));
    assert.equal(late.response.resyncAfterSeconds, 12 * 3600, "leaves renew at day 20");
  });

  test("a validity change re-issues the leaves, and only them", async () => {
    const first = { request: syncRequest(etcdStorage("t", SPEC), related), response: (await sync(syncRequest(etcdStorage("t", SPEC), related), config, T0)).response };
    const changed = { ...first, request: { ...first.request, parent: etcdStorage("t", { ...SPEC, clientCertificateValidity: "240h" }) } };
    const { response } = await step(changed, at(1));
    const cert = client(response);
    assert.equal((Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / DAY, 10);
    assert.equal(serving(response).serialNumber, serving(first.response).serialNumber, "the serving certificate still fits");
    assert.deepEqual(caSecret(response), caSecret(first.response));
  });

  test("a leaf never outlives its CA", async () => {
    const spec = { ...SPEC, signingCertificateValidity: "720h", clientCertificateValidity: "720h" };
    const first = { request: syncRequest(etcdStorage("t", spec), related), response: (await sync(syncRequest(etcdStorage("t", spec), related), config, T0)).response };
    // Renewal at day 20 happens while the CA (30 days) has a successor pending.
    const { response } = await step(first, at(20.5));
    const leaf = client(response);
    assert.ok(Date.parse(leaf.validTo) <= Date.parse(issuingClientCa(response).validTo));
  });
});
