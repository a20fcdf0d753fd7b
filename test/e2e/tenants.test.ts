// Issue: an EtcdStorage becomes a working, isolated etcd proxy tenant. Real etcd, the tenant
// gateway started from exactly the returned Deployment, real TLS.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { connect } from "node:tls";
import { after, before, describe, test } from "node:test";
import { sync } from "../../hooks/sync.ts";
import { nextRequest, testConfig } from "../support/requests.ts";
import { httpGet, startCoreEtcd, stopAll, tempDir, waitFor, type CoreEtcd } from "./harness.ts";
import { startTenant, type RunningTenant } from "./tenant.ts";

const spec = (name: string) => ({
  caCertConfigMap: [{ name: "etcd-serving-ca", namespace: `${name}-system` }],
  clientCertSecret: [{ name: "etcd-client-cert", namespace: `${name}-system` }],
});

describe("two tenants on one core etcd", () => {
  let core: CoreEtcd;
  let a: RunningTenant;
  let ab: RunningTenant;
  let config: ReturnType<typeof testConfig>;

  before(async () => {
    const dir = await tempDir("tenants-");
    core = await startCoreEtcd(dir);
    config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
    [a, ab] = await Promise.all([
      startTenant(config, core, "tenant-a", spec("tenant-a"), path.join(dir, "a")),
      startTenant(config, core, "tenant-ab", spec("tenant-ab"), path.join(dir, "ab")),
    ]);
    assert.ok(await core.etcdctl(["put", "/registry/secrets/kube-system/host-secret", "host-value"]).then((r) => r.code === 0));
  });
  after(stopAll);

  test("the proxy pod runs exactly the returned command: one container, the gateway, from the project's image", () => {
    const deployment = a.response.children.find((c) => c.kind === "Deployment")!;
    const containers = (deployment.spec as any).template.spec.containers;
    assert.deepEqual(containers.map((c: { name: string }) => c.name), ["gateway"]);
    assert.equal(containers[0].image, config.gatewayImage);
    assert.deepEqual(containers[0].command, ["/usr/local/bin/node", "--v8-pool-size=1", "--max-semi-space-size=16", "--external-memory-accounted-in-global-limit", "--expose-gc", "dist/gateway/main.js"]);
    assert.equal(a.proxy.gateway.executable, process.execPath);
    assert.deepEqual(a.proxy.gateway.args.slice(0, 6), ["--v8-pool-size=1", "--max-semi-space-size=16", "--external-memory-accounted-in-global-limit", "--expose-gc", "dist/gateway/main.js", "--tenant=tenant-a"]);
    assert.equal(a.proxy.gateway.args.length, containers[0].command.length - 1 + containers[0].args.length, "no flag added or dropped");
    assert.ok(containers[0].args.includes("--prefix=/etcdstorage/tenant-a/"));
  });

  test("what the API server writes lands under status.prefix", async () => {
    const prefix = (a.response.status as { prefix: string }).prefix;
    assert.equal(prefix, "/etcdstorage/tenant-a/");
    const put = await a.etcdctl(["put", "/registry/widgets/default/w1", "from-a"]);
    assert.equal(put.code, 0, put.stderr);
    const got = await a.etcdctl(["get", "/registry/widgets/default/w1", "--print-value-only"]);
    assert.equal(got.stdout.trim(), "from-a");
    const stored = await core.etcdctl(["get", `${prefix}/registry/widgets/default/w1`, "--print-value-only"]);
    assert.equal(stored.stdout.trim(), "from-a", "the key is stored under the tenant's prefix in core etcd");
  });

  test("nothing outside the prefix is reachable through the proxy's KV API", async () => {
    assert.equal((await ab.etcdctl(["put", "/registry/widgets/default/w1", "from-ab"])).code, 0);
    const all = await a.etcdctl(["get", "", "--prefix", "--keys-only"]);
    assert.equal(all.code, 0, all.stderr);
    assert.deepEqual(all.stdout.split("\n").filter(Boolean), ["/registry/widgets/default/w1"], "only tenant-a's own key is visible");
    const host = await a.etcdctl(["get", "/registry/secrets/kube-system/host-secret"]);
    assert.equal(host.stdout.trim(), "", "the host cluster's keys are not reachable");
    assert.equal((await a.etcdctl(["get", "/registry/widgets/default/w1", "--print-value-only"])).stdout.trim(), "from-a", "tenant-ab's write did not touch tenant-a");
    const deleted = await a.etcdctl(["del", "", "--prefix"]);
    assert.equal(deleted.code, 0);
    assert.equal((await core.etcdctl(["get", "/registry/secrets/kube-system/host-secret", "--print-value-only"])).stdout.trim(), "host-value");
    assert.equal((await core.etcdctl(["get", "/etcdstorage/tenant-ab//registry/widgets/default/w1", "--print-value-only"])).stdout.trim(), "from-ab");
  });

  test("the other tenant's client certificate is rejected", async () => {
    const result = await a.etcdctl(["get", "x"], { cert: ab.credentials.cert, key: ab.credentials.key });
    assert.notEqual(result.code, 0);
  });

  test("a client without a certificate is rejected", async () => {
    const result = await a.etcdctl(["get", "x"], { cert: undefined, key: undefined });
    assert.notEqual(result.code, 0);
  });

  test("the serving certificate verifies against the Service DNS name", async () => {
    const handshake = async (servername: string) => {
      const [ca, cert, key] = await Promise.all([a.credentials.cacert, a.credentials.cert, a.credentials.key].map((file) => readFile(file)));
      return new Promise<{ authorized: boolean; error?: string }>((resolve) => {
        const socket = connect({ host: "127.0.0.1", port: a.proxy.clientPort, servername, ca, cert, key, ALPNProtocols: ["h2"] }, () => {
          resolve({ authorized: socket.authorized });
          socket.end();
        });
        socket.on("error", (error) => resolve({ authorized: false, error: error.message }));
      });
    };
    for (const name of ["etcd-tenant-a.kube-apiserver-storage.svc", "etcd-tenant-a.kube-apiserver-storage.svc.cluster.local", "etcd-tenant-a"]) {
      assert.deepEqual(await handshake(name), { authorized: true }, name);
    }
    const wrong = await handshake("etcd-tenant-ab.kube-apiserver-storage.svc");
    assert.equal(wrong.authorized, false);
    assert.match(wrong.error ?? "", /does not match certificate's altnames/);
  });

  test("readiness follows core etcd, liveness does not", async () => {
    const probe = (path: string) => httpGet(`http://127.0.0.1:${a.proxy.healthPort}${path}`).catch(() => ({ status: 0, body: "" }));
    await core.stop();
    try {
      await waitFor("readiness fails while core etcd is down", async () => (await probe("/readyz")).status === 503);
      assert.equal((await probe("/livez")).status, 200, "the liveness probe still succeeds");
      // The hook never talks to etcd: with etcd down, the steady state's answer is the same.
      const { response } = await sync(nextRequest(a.request, a.response), config, new Date());
      assert.deepEqual(response.children, a.response.children);
      const deployment = a.response.children.find((c) => c.kind === "Deployment")!;
      const container = (deployment.spec as any).template.spec.containers[0];
      assert.deepEqual(container.livenessProbe.httpGet, { path: "/livez", port: "health" });
      assert.deepEqual(container.readinessProbe.httpGet, { path: "/readyz", port: "health" });
    } finally {
      await core.start();
    }
    await waitFor("readiness recovers", async () => (await probe("/readyz")).status === 200);
    assert.equal((await a.etcdctl(["get", "/registry/widgets/default/w1", "--print-value-only"])).code, 0, "the gateway reconnected by itself");
  });
});
