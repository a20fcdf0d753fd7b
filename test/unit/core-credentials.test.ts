import assert from "node:assert/strict";
import { before, test } from "node:test";
import { checkCoreCredentials } from "../../hooks/core-credentials.ts";
import { issueLeaf } from "../../hooks/pki/issue.ts";
import { sync } from "../../hooks/sync.ts";
import { coreRelated, etcdStorage, makeCorePki, SAMPLE_SPEC, syncRequest, testConfig, type CorePki } from "../support/requests.ts";

const config = testConfig();
const now = new Date("2027-06-01T00:00:00Z");
let pki: CorePki;
before(async () => {
  pki = await makeCorePki(new Date("2027-01-01T00:00:00Z"), 1);
});

test("valid core credentials", () => {
  const result = checkCoreCredentials(coreRelated(config, pki), config, now);
  assert.equal(result.ready, true);
});

test("a client certificate with a CN is valid too (the gateway, unlike grpc-proxy, takes one)", async () => {
  const client = await issueLeaf({ subject: { commonName: "etcdstorage-gateway" }, usage: "client", dnsNames: [], ipAddresses: [] }, { notBefore: new Date("2027-01-01T00:00:00Z"), notAfter: new Date("2028-01-01T00:00:00Z") }, pki.ca);
  assert.equal(checkCoreCredentials(coreRelated(config, { ca: pki.ca, client }), config, now).ready, true);
});

const cases: [string, () => Promise<Parameters<typeof checkCoreCredentials>[0]>, string][] = [
  ["missing CA ConfigMap", async () => ({ "Secret.v1": coreRelated(config, pki)["Secret.v1"]! }), "CoreCAMissing"],
  ["missing client Secret", async () => ({ "ConfigMap.v1": coreRelated(config, pki)["ConfigMap.v1"]! }), "CoreClientCertMissing"],
  ["an expired client certificate", async () => coreRelated(config, pki), "CoreClientCertExpired"],
  ["a key that does not match", async () => coreRelated(config, { ca: pki.ca, client: { certPem: pki.client.certPem, keyPem: pki.server.keyPem } }), "CoreClientKeyMismatch"],
  ["garbage in ca.crt", async () => coreRelated(config, { ca: { certPem: "garbage", keyPem: "" }, client: pki.client }), "CoreCAInvalid"],
];

for (const [what, related, reason] of cases) {
  test(`${what} → CoreCredentialsReady=False, ${reason}, and Ready=False`, async () => {
    const at = reason === "CoreClientCertExpired" ? new Date("2028-06-01T00:00:00Z") : now;
    const result = checkCoreCredentials(await related(), config, at);
    assert.equal(result.ready, false);
    assert.equal(!result.ready && result.reason, reason);
    const { response } = await sync(syncRequest(etcdStorage("t", SAMPLE_SPEC), await related()), config, at);
    const conditions = (response.status as { conditions: { type: string; status: string; reason: string }[] }).conditions;
    assert.deepEqual(conditions.find((c) => c.type === "CoreCredentialsReady")?.reason, reason);
    assert.equal(conditions.find((c) => c.type === "Ready")?.status, "False");
    assert.ok(response.children.length > 0, "the tenant's children are still answered");
  });
}
