// Issue: certificate lifecycle across a CA rotation, on real etcd with real TLS. The hook's clock
// is moved through the past so that every certificate it issues is valid right now:
//   t0 = R-55d  CAs issued (60 days: rotation at R-15d, expiry at R+5d)
//   t1 = R-16d  leaves renewed by the first CAs (20 days, valid until R+4d)   ← "before"
//   t2 = R-15d  successor CAs published next to the old ones; leaves stay
//   t3 = R-5d   the overlap (10 days) is over: leaves move to the successors  ← "after"
//   R   (now)   both CAs and both generations of leaves are valid: the overlap in real time.
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import type { HookRequest, HookResponse } from "../../hooks/observed.ts";
import { splitPemBundle } from "../../hooks/pki/parse.ts";
import { sync } from "../../hooks/sync.ts";
import { DAY, etcdStorage, nextRequest, syncRequest, testConfig } from "../support/requests.ts";
import { startCoreEtcd, stopAll, tempDir, type CoreEtcd } from "./harness.ts";
import { find, relatedFor, startProxy, writeCredentials, type ApiServerCredentials } from "./tenant.ts";
import { runEtcdctl } from "./harness.ts";

const SPEC = {
  caCertConfigMap: [{ name: "etcd-ca", namespace: "r-system" }],
  clientCertSecret: [{ name: "etcd-client", namespace: "r-system" }],
  signingCertificateValidity: "1440h",
  servingCertificateValidity: "480h",
  clientCertificateValidity: "480h",
};

describe("a CA rotation never breaks a connected API server", () => {
  const R = Date.now();
  const at = (days: number) => new Date(R + days * DAY);
  let dir: string;
  let core: CoreEtcd;
  let config: ReturnType<typeof testConfig>;
  const answers: { request: HookRequest; response: HookResponse }[] = [];

  before(async () => {
    dir = await tempDir("rotation-");
    core = await startCoreEtcd(dir);
    config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
    let request = syncRequest(etcdStorage("r", SPEC), relatedFor(config, core));
    for (const time of [at(-55), at(-16), at(-15), at(-5)]) {
      if (answers.length > 0) request = nextRequest(answers.at(-1)!.request, answers.at(-1)!.response);
      answers.push({ request, response: (await sync(request, config, time)).response });
    }
  });
  after(stopAll);

  const destination = (i: number) => find(answers[i]!.response, "Secret", "r-system", "etcd-client");
  const clientPair = (i: number) => {
    const data = destination(i).data as Record<string, string>;
    return [data["tls.crt"], data["tls.key"]];
  };
  const servingBundle = (i: number) => splitPemBundle(Buffer.from((destination(i).data as Record<string, string>)["ca.crt"]!, "base64").toString()).length;
  const checksum = (i: number) => (find(answers[i]!.response, "Deployment", config.proxyNamespace, "etcd-r").spec as any).template.metadata.annotations["etcdproxy.dev/trust-checksum"];
  const trusted = (i: number) => splitPemBundle((find(answers[i]!.response, "ConfigMap", config.proxyNamespace, "etcd-r-trusted-ca").data as Record<string, string>)["ca.crt"]).length;
  const works = async (endpoint: string, credentials: ApiServerCredentials, key: string) => {
    const result = await runEtcdctl(endpoint, credentials, ["put", key, "v"]);
    return result.code === 0 ? "ok" : result.stderr.trim().split("\n").at(-1);
  };

  test("the sequence: publish first, then move the leaves", () => {
    assert.deepEqual(clientPair(2), clientPair(1), "publishing the successor leaves the client certificate alone");
    assert.equal(servingBundle(1), 1);
    assert.equal(servingBundle(2), 2, "the API server's ca.crt holds both serving CAs");
    assert.equal(trusted(1), 1);
    assert.equal(trusted(2), 2, "the proxy trusts both client CAs");
    assert.notEqual(checksum(2), checksum(1), "the new trust bundle rolls the proxies");
    assert.notDeepEqual(clientPair(3), clientPair(2), "after the overlap the client certificate is re-issued");
    assert.equal(servingBundle(3), 2, "the old serving CA stays trusted until it expires");
    assert.equal(checksum(3), checksum(2), "moving the leaves changes no trust bundle: no second roll");
  });

  test("credentials from before the rotation keep working through the proxy during the overlap", async () => {
    const before = await writeCredentials(destination(1), path.join(dir, "creds-before"));
    const published = await writeCredentials(destination(2), path.join(dir, "creds-published"));
    // The proxy restarted with the new trust bundle (answer t2).
    const { proxy, clientPort } = await startProxy(config, answers[2]!.request, answers[2]!.response, path.join(dir, "proxy-t2"));
    const endpoint = `https://127.0.0.1:${clientPort}`;
    assert.equal(await works(endpoint, before, "/before"), "ok");
    assert.equal(await works(endpoint, published, "/published"), "ok");
    await proxy.stop();
  });

  test("after the leaves moved, the proxy accepts old and new client certificates while both are valid", async () => {
    const before = await writeCredentials(destination(1), path.join(dir, "creds-before-2"));
    const afterMove = await writeCredentials(destination(3), path.join(dir, "creds-after"));
    const { proxy, clientPort } = await startProxy(config, answers[3]!.request, answers[3]!.response, path.join(dir, "proxy-t3"));
    const endpoint = `https://127.0.0.1:${clientPort}`;
    assert.equal(await works(endpoint, afterMove, "/after"), "ok", "new credentials");
    assert.equal(await works(endpoint, { ...afterMove, cert: before.cert, key: before.key }, "/old-cert"), "ok", "the old client certificate, with the current bundle");
    // Why the overlap exists: a client that never reloaded its CA bundle cannot verify the new serving certificate.
    assert.notEqual(await works(endpoint, before, "/stale-bundle"), "ok");
    await proxy.stop();
    const keys = (await core.etcdctl(["get", "/etcdstorage/r/", "--prefix", "--keys-only"])).stdout.split("\n").filter(Boolean).sort();
    assert.deepEqual(keys, ["/etcdstorage/r//after", "/etcdstorage/r//before", "/etcdstorage/r//old-cert", "/etcdstorage/r//published"]);
  });
});
