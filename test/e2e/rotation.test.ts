// Issue 10 (faults): certificate files replaced on disk take effect without restarting the
// gateway: a serving-certificate renewal, each step of a CA rotation, and new core credentials.
// One gateway process runs from the first answer to the last; between answers the harness
// rewrites its volume files as the kubelet does when Secrets and ConfigMaps change. The hook's
// clock is moved through the past so that every certificate it issues is valid right now:
//   t1 = R-16d  CAs issued at R-55d (60 days: successor at R-15d, expiry at R+5d), leaves renewed
//   t2 = R-15d  successor CAs published next to the old ones; leaves stay
//   t3 = R-5d   the overlap (10 days) is over: leaves move to the successors
//   R   (now)   both CAs and both generations of leaves are valid: the overlap in real time.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { connect } from "node:tls";
import { after, before, describe, test } from "node:test";
import type { HookRequest, HookResponse } from "../../hooks/observed.ts";
import { issueCa, issueLeaf } from "../../hooks/pki/issue.ts";
import { splitPemBundle } from "../../hooks/pki/parse.ts";
import { sync } from "../../hooks/sync.ts";
import { coreRelated, DAY, etcdStorage, nextRequest, syncRequest, testConfig, unb64 } from "../support/requests.ts";
import { httpGet, runEtcdctl, startCoreEtcd, stopAll, tempDir, waitFor, type CoreEtcd } from "./harness.ts";
import { find, relatedFor, startProxy, writeCredentials, type ApiServerCredentials, type RunningProxy } from "./tenant.ts";

const SPEC = {
  caCertConfigMap: [{ name: "etcd-ca", namespace: "r-system" }],
  clientCertSecret: [{ name: "etcd-client", namespace: "r-system" }],
  signingCertificateValidity: "1440h",
  servingCertificateValidity: "480h",
  clientCertificateValidity: "480h",
};

after(stopAll);

describe("certificates replaced on disk take effect without restarting the gateway", () => {
  const R = Date.now();
  const at = (days: number) => new Date(R + days * DAY);
  let dir: string;
  let core: CoreEtcd;
  let config: ReturnType<typeof testConfig>;
  const answers: Record<"t0" | "t1" | "t2" | "t3", { request: HookRequest; response: HookResponse }> = {} as never;
  let proxy: RunningProxy;
  let pid: number | undefined;

  before(async () => {
    dir = await tempDir("rotation-");
    core = await startCoreEtcd(dir);
    config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
    let request = syncRequest(etcdStorage("r", SPEC), relatedFor(config, core));
    let previous: { request: HookRequest; response: HookResponse } | undefined;
    for (const [name, time] of [["t0", at(-55)], ["t1", at(-16)], ["t2", at(-15)], ["t3", at(-5)]] as const) {
      if (previous) request = nextRequest(previous.request, previous.response);
      previous = { request, response: (await sync(request, config, time)).response };
      answers[name] = previous;
    }
    proxy = await startProxy(config, answers.t1.request, answers.t1.response, path.join(dir, "proxy"));
    pid = proxy.gateway.process.pid;
  });

  const destination = (name: keyof typeof answers) => find(answers[name].response, "Secret", "r-system", "etcd-client");
  const credentials = (name: keyof typeof answers) => writeCredentials(destination(name), path.join(dir, `creds-${name}`));
  const endpoint = () => `https://127.0.0.1:${proxy.clientPort}`;
  const put = async (creds: ApiServerCredentials, key: string) => {
    const result = await runEtcdctl(endpoint(), creds, ["put", key, "v"]);
    return result.code === 0 ? "ok" : result.stderr.trim().split("\n").at(-1);
  };
  /** The serial number of the certificate the gateway serves now. */
  const servedSerial = async (creds: ApiServerCredentials) => {
    const [ca, cert, key] = await Promise.all([creds.cacert, creds.cert, creds.key].map((file) => readFile(file)));
    return new Promise<string>((resolve, reject) => {
      const socket = connect({ host: "127.0.0.1", port: proxy.clientPort, servername: "localhost", ca, cert, key, rejectUnauthorized: false, ALPNProtocols: ["h2"] }, () => {
        resolve(socket.getPeerCertificate().serialNumber);
        socket.end();
      });
      socket.on("error", reject);
    });
  };
  const serialOf = (name: keyof typeof answers) => {
    const pem = unb64((find(answers[name].response, "Secret", config.proxyNamespace, "etcd-r-server-tls").data as Record<string, string>)["tls.crt"]);
    return new X509Certificate(pem).serialNumber;
  };
  const sameProcess = () => {
    assert.equal(proxy.gateway.process.pid, pid, "the gateway was not restarted");
    assert.equal(proxy.gateway.process.exitCode, null);
  };

  test("the answers: publish the successors first, then move the leaves; the Deployment never changes", () => {
    const trusted = (name: keyof typeof answers) => splitPemBundle((find(answers[name].response, "ConfigMap", config.proxyNamespace, "etcd-r-trusted-ca").data as Record<string, string>)["ca.crt"]).length;
    assert.deepEqual([trusted("t1"), trusted("t2"), trusted("t3")], [1, 2, 2]);
    const deployment = (name: keyof typeof answers) => find(answers[name].response, "Deployment", config.proxyNamespace, "etcd-r");
    assert.deepEqual(deployment("t3"), deployment("t1"), "nothing rolls the proxy pods for certificates");
  });

  test("a serving certificate re-issued by the same CA is served without a restart", async () => {
    // A changed validity re-issues the leaves from the same CA at once: a renewal, in the past.
    const request = nextRequest(answers.t1.request, answers.t1.response);
    request.parent = { ...request.parent, spec: { ...SPEC, servingCertificateValidity: "479h" } };
    const renewal = (await sync(request, config, at(-16))).response;
    const serial = (response: HookResponse) => new X509Certificate(unb64((find(response, "Secret", config.proxyNamespace, "etcd-r-server-tls").data as Record<string, string>)["tls.crt"])).serialNumber;
    assert.notEqual(serial(renewal), serialOf("t1"));
    const creds = await credentials("t1");
    assert.equal(await servedSerial(creds), serialOf("t1"));
    await proxy.updateVolumes(request, renewal);
    await waitFor("the renewed serving certificate to be served", async () => (await servedSerial(creds)) === serial(renewal), 15_000, () => proxy.gateway.logs());
    assert.equal(await put(creds, "/after-renewal"), "ok");
    sameProcess();
  });

  test("a published client CA is trusted without a restart", async () => {
    const moved = await credentials("t3"); // a client certificate from the successor client CA
    const current = await credentials("t1");
    assert.equal(await put(current, "/t1"), "ok");
    assert.notEqual(await put({ ...current, cert: moved.cert, key: moved.key }, "/early"), "ok", "not trusted before it is published");
    await proxy.updateVolumes(answers.t2.request, answers.t2.response);
    await waitFor("the successor client CA to be trusted", async () => (await put({ ...current, cert: moved.cert, key: moved.key }, "/published")) === "ok", 15_000, () => proxy.gateway.logs());
    assert.equal(await put(current, "/t1-still"), "ok", "the old client CA stays trusted");
    sameProcess();
  });

  test("a serving certificate from the successor CA is served without a restart; old bundles then fail, as the overlap warns", async () => {
    const old = await credentials("t1");
    const moved = await credentials("t3");
    await proxy.updateVolumes(answers.t3.request, answers.t3.response);
    await waitFor("the new serving certificate to be served", async () => (await servedSerial(moved)) === serialOf("t3"), 15_000, () => proxy.gateway.logs());
    assert.equal(await put(moved, "/t3"), "ok", "new credentials");
    assert.equal(await put({ ...moved, cert: old.cert, key: old.key }, "/t1-cert"), "ok", "the old client certificate, with the current bundle");
    assert.notEqual(await put(old, "/stale-bundle"), "ok", "a client that never reloaded its CA bundle cannot verify the new serving certificate");
    sameProcess();
    const keys = (await core.etcdctl(["get", "/etcdstorage/r/", "--prefix", "--keys-only"])).stdout.split("\n").filter(Boolean).sort();
    assert.deepEqual(keys, ["/etcdstorage/r//after-renewal", "/etcdstorage/r//published", "/etcdstorage/r//t1", "/etcdstorage/r//t1-cert", "/etcdstorage/r//t1-still", "/etcdstorage/r//t3"]);
  });

});

describe("new core credentials take effect without restarting the gateway", () => {
  test("a gateway started with a client certificate core etcd does not trust becomes ready once the right one is mounted", async () => {
    const dir = await tempDir("core-credentials-");
    const core = await startCoreEtcd(dir);
    const config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
    const now = new Date();
    const validity = { notBefore: new Date(now.getTime() - DAY), notAfter: new Date(now.getTime() + 30 * DAY) };
    const strangerCa = await issueCa({ commonName: "not core etcd's CA" }, validity);
    const stranger = await issueLeaf({ subject: { organization: "etcd-proxy" }, usage: "client", dnsNames: [], ipAddresses: [] }, validity, strangerCa);
    const wrong = syncRequest(etcdStorage("c", SPEC), coreRelated(config, { ca: core.pki.ca, client: stranger }));
    const wrongAnswer = (await sync(wrong, config, now)).response;
    const proxy = await startProxy(config, wrong, wrongAnswer, path.join(dir, "proxy"), { waitReady: false });
    const readyz = () => httpGet(`http://127.0.0.1:${proxy.healthPort}/readyz`).catch(() => ({ status: 0, body: "" }));
    await waitFor("readiness to report core etcd refusing the certificate", async () => (await readyz()).status === 503, 15_000, () => proxy.gateway.logs());
    const pid = proxy.gateway.process.pid;

    const right = { ...wrong, related: relatedFor(config, core) };
    await proxy.updateVolumes(right, (await sync(right, config, now)).response);
    await waitFor("the gateway to reach core etcd with the new certificate", async () => (await readyz()).status === 200, 15_000, () => proxy.gateway.logs());
    assert.equal(proxy.gateway.process.pid, pid);
    assert.match(proxy.gateway.logs(), /"side":"core".*"msg":"TLS material reloaded"/);
  });
});
