// Self-test of the e2e harness: a real TLS core etcd, and etcd grpc-proxy run from a hand-built
// Deployment exactly as a hook would return it (only binary, mount paths and ports rewritten).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { issueCa, issueLeaf } from "../../hooks/pki/issue.ts";
import {
  base64,
  etcdRelease,
  coreCaConfigMap,
  coreClientSecret,
  freePort,
  httpGet,
  liveProcesses,
  podSpecOf,
  runContainer,
  runEtcdctl,
  startCoreEtcd,
  stopAll,
  tempDir,
  waitFor,
  type CoreEtcd,
  type EtcdctlCredentials,
  type K8sObject,
  type RunContainerOptions,
  type RunningContainer,
} from "./harness.ts";

const NAMESPACE = "t1";
const BINARIES = { "/usr/local/bin/etcd": etcdRelease().etcd, "/usr/local/bin/etcdctl": etcdRelease().etcdctl };

/** A Deployment as the hook might return it: proxy container, volumes from Secrets/ConfigMaps. */
function proxyDeployment(coreEndpoint: string): K8sObject {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { namespace: NAMESPACE, name: "proxy" },
    spec: {
      template: {
        spec: {
          containers: [
            {
              name: "proxy",
              image: "registry.k8s.io/etcd:3.6.16-0",
              command: ["/usr/local/bin/etcd", "grpc-proxy", "start"],
              args: [
                `--endpoints=${coreEndpoint}`,
                "--namespace=/t/",
                "--listen-addr=0.0.0.0:2379",
                // None: grpc-proxy (3.5.35, 3.6.16; not 3.5.16) dials its advertised URL at start
                // as a client of itself, with its serving certificate as the client certificate
                // and the client CA as the server's, and exits after 5 s when refused, as here
                // (a server-only certificate of another CA). Only /proxy/health uses that client.
                "--advertise-client-url=",
                "--cacert=/etc/core-ca/ca.crt",
                "--cert=/etc/core-client/tls.crt",
                "--key=/etc/core-client/tls.key",
                "--cert-file=/etc/serving/tls.crt",
                "--key-file=/etc/serving/tls.key",
                "--trusted-ca-file=/etc/client-ca/ca.crt",
                "--metrics-addr=http://0.0.0.0:2381",
                "--data-dir=/var/lib/proxy",
              ],
              env: [
                { name: "A", value: "1" },
                { name: "B", value: "$(A)-2" },
              ],
              volumeMounts: [
                { name: "core-ca", mountPath: "/etc/core-ca", readOnly: true },
                { name: "core-client", mountPath: "/etc/core-client", readOnly: true },
                { name: "serving", mountPath: "/etc/serving", readOnly: true },
                { name: "client-ca", mountPath: "/etc/client-ca", readOnly: true },
                { name: "data", mountPath: "/var/lib/proxy" },
              ],
            },
          ],
          volumes: [
            { name: "core-ca", configMap: { name: "core-ca" } },
            { name: "core-client", secret: { secretName: "core-client" } },
            { name: "serving", secret: { secretName: "proxy-serving", items: [{ key: "tls.crt", path: "tls.crt" }, { key: "tls.key", path: "tls.key" }] } },
            { name: "client-ca", projected: { sources: [{ configMap: { name: "client-ca", items: [{ key: "ca.crt", path: "ca.crt" }] } }] } },
            { name: "data", emptyDir: {} },
          ],
        },
      },
    },
  };
}

let dir: string;
let core: CoreEtcd;
let objects: K8sObject[];
let deployment: K8sObject;
let proxy: RunningContainer;
let grpcPort: number;
let metricsPort: number;
let tenant: EtcdctlCredentials;
let certless: EtcdctlCredentials;

const proxyEndpoint = (): string => `https://127.0.0.1:${grpcPort}`;
const metricsUrl = (p: string): string => `http://127.0.0.1:${metricsPort}${p}`;

function runOptions(overrides: Partial<RunContainerOptions> = {}): RunContainerOptions {
  return {
    podSpec: podSpecOf(deployment),
    containerName: "proxy",
    namespace: NAMESPACE,
    objects,
    dir,
    binaries: BINARIES,
    ports: { 2379: grpcPort, 2381: metricsPort },
    ...overrides,
  };
}

async function waitForProxyHealth(expectOk: boolean): Promise<void> {
  await waitFor(
    `proxy /health to answer ${expectOk ? "200" : "non-200"}`,
    async () => ((await httpGet(metricsUrl("/health"))).status === 200) === expectOk,
    20_000,
    () => proxy.logs(),
  );
}

before(async () => {
  dir = await tempDir("harness-test-");
  core = await startCoreEtcd(dir);

  // The proxy's serving certificate and the tenants' client CA are the hook's business; here
  // they are made by hand.
  const validity = { notBefore: new Date(Date.now() - 3600_000), notAfter: new Date(Date.now() + 24 * 3600_000) };
  const servingCa = await issueCa({ commonName: "proxy serving CA" }, validity);
  const serving = await issueLeaf({ subject: { commonName: "proxy" }, usage: "server", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] }, validity, servingCa);
  const clientCa = await issueCa({ commonName: "tenant client CA" }, validity);
  const tenantCert = await issueLeaf({ subject: { commonName: "tenant-a" }, usage: "client", dnsNames: [], ipAddresses: [] }, validity, clientCa);

  const clientDir = path.join(dir, "tenant");
  await mkdir(clientDir, { recursive: true });
  await writeFile(path.join(clientDir, "ca.crt"), servingCa.certPem);
  await writeFile(path.join(clientDir, "tls.crt"), tenantCert.certPem);
  await writeFile(path.join(clientDir, "tls.key"), tenantCert.keyPem);
  tenant = { cacert: path.join(clientDir, "ca.crt"), cert: path.join(clientDir, "tls.crt"), key: path.join(clientDir, "tls.key") };
  certless = { cacert: tenant.cacert };

  objects = [
    coreCaConfigMap(NAMESPACE, "core-ca", core.pki.ca.certPem),
    coreClientSecret(NAMESPACE, "core-client", core.pki.client.certPem, core.pki.client.keyPem),
    {
      apiVersion: "v1",
      kind: "Secret",
      type: "kubernetes.io/tls",
      metadata: { namespace: NAMESPACE, name: "proxy-serving" },
      data: { "tls.crt": base64(serving.certPem), "tls.key": base64(serving.keyPem) },
    },
    { apiVersion: "v1", kind: "ConfigMap", metadata: { namespace: NAMESPACE, name: "client-ca" }, data: { "ca.crt": clientCa.certPem } },
  ];
  deployment = proxyDeployment(core.endpoint);
  [grpcPort, metricsPort] = [await freePort(), await freePort()];
  proxy = await runContainer(runOptions());
  await waitForProxyHealth(true);
});

after(async () => {
  await stopAll();
  assert.deepEqual(liveProcesses(), [], "no process may survive the suite");
});

test("freePort: ports below the kernel's ephemeral range, which outgoing connections never take, free, and each handed out once", async () => {
  const [low] = (await readFile("/proc/sys/net/ipv4/ip_local_port_range", "utf8")).trim().split(/\s+/).map(Number);
  const ports = await Promise.all(Array.from({ length: 20 }, () => freePort()));
  for (const port of ports) assert.ok(port >= 10_000 && port < low!, `${port} lies below ${low}`);
  assert.equal(new Set(ports).size, ports.length, "never the same port twice, even to calls made at once");
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(ports[0], "127.0.0.1", resolve));
  server.close();
});

test("core etcd: a put and a get with the backend client certificate (empty CN)", async () => {
  const put = await core.etcdctl(["put", "/core-check", "v"]);
  assert.equal(put.code, 0, put.stderr);
  const get = await core.etcdctl(["get", "/core-check", "--print-value-only"]);
  assert.equal(get.code, 0, get.stderr);
  assert.equal(get.stdout.trim(), "v");
});

test("runContainer: keeps command and flags, rewrites only binary, mount paths and ports", () => {
  const root = path.join(dir, "root");
  assert.equal(proxy.executable, etcdRelease().etcd);
  assert.deepEqual(proxy.args, [
    "grpc-proxy",
    "start",
    `--endpoints=${core.endpoint}`,
    "--namespace=/t/",
    `--listen-addr=127.0.0.1:${grpcPort}`,
    "--advertise-client-url=",
    `--cacert=${root}/etc/core-ca/ca.crt`,
    `--cert=${root}/etc/core-client/tls.crt`,
    `--key=${root}/etc/core-client/tls.key`,
    `--cert-file=${root}/etc/serving/tls.crt`,
    `--key-file=${root}/etc/serving/tls.key`,
    `--trusted-ca-file=${root}/etc/client-ca/ca.crt`,
    `--metrics-addr=http://127.0.0.1:${metricsPort}`,
    `--data-dir=${root}/var/lib/proxy`,
  ]);
});

test("runContainer: volume files come from the Secrets/ConfigMaps, env from the container", async () => {
  assert.equal(await readFile(proxy.rewritePath("/etc/core-ca/ca.crt"), "utf8"), core.pki.ca.certPem);
  assert.equal(await readFile(proxy.rewritePath("/etc/core-client/tls.key"), "utf8"), core.pki.client.keyPem);
  const environ = (await readFile(`/proc/${proxy.process.pid}/environ`, "utf8")).split("\0");
  assert.ok(environ.includes("A=1") && environ.includes("B=1-2"), `env: ${environ.join(" ")}`);
});

test("proxy: a tenant put lands under the namespace /t/ in core etcd", async () => {
  const put = await runEtcdctl(proxyEndpoint(), tenant, ["put", "k1", "v1"]);
  assert.equal(put.code, 0, put.stderr);
  const core1 = await core.etcdctl(["get", "/t/k1", "--print-value-only"]);
  assert.equal(core1.stdout.trim(), "v1");
  const through = await runEtcdctl(proxyEndpoint(), tenant, ["get", "k1", "--print-value-only"]);
  assert.equal(through.stdout.trim(), "v1");
});

test("proxy: a client without a certificate is refused", async () => {
  const put = await runEtcdctl(proxyEndpoint(), certless, ["put", "sneaky", "x"]);
  assert.notEqual(put.code, 0, `certificate-less put succeeded: ${put.stdout}`);
  const core1 = await core.etcdctl(["get", "/t/sneaky", "--keys-only"]);
  assert.equal(core1.stdout.trim(), "");
});

test("runContainer: a missing Secret is a clear error, and nothing is started", async () => {
  const before = liveProcesses().length;
  const wrongNamespace = objects.map((o) =>
    o.metadata?.name === "proxy-serving" ? { ...o, metadata: { ...o.metadata, namespace: "other" } } : o,
  );
  await assert.rejects(
    runContainer(runOptions({ objects: wrongNamespace, dir: path.join(dir, "missing-secret") })),
    (error: Error) => {
      assert.match(error.message, /^Secret t1\/proxy-serving \(used by volume serving\) is not among the objects/);
      assert.match(error.message, /found Secret proxy-serving with metadata\.namespace="other"/);
      return true;
    },
  );
  assert.equal(liveProcesses().length, before);
});

test("runContainer: an argument naming a file that no volume provides is an error", async () => {
  const spec = structuredClone(podSpecOf(deployment));
  spec.containers[0]!.volumeMounts = spec.containers[0]!.volumeMounts!.filter((m) => m.name !== "client-ca");
  await assert.rejects(
    runContainer(runOptions({ podSpec: spec, dir: path.join(dir, "unmounted") })),
    /argument "--trusted-ca-file=\/etc\/client-ca\/ca.crt" names \/etc\/client-ca\/ca.crt, which is under no volumeMount/,
  );
  const noKey = structuredClone(podSpecOf(deployment));
  noKey.volumes!.find((v) => v.name === "serving")!.secret!.items = [{ key: "tls.crt", path: "tls.crt" }];
  await assert.rejects(
    runContainer(runOptions({ podSpec: noKey, dir: path.join(dir, "no-key") })),
    /names \/etc\/serving\/tls.key, which the materialized volume at \/etc\/serving does not contain/,
  );
});

// What the proxy's plain-HTTP metrics listener serves, with core etcd up and down. Measured on
// etcd 3.5.16 and 3.6.16: /health asks core etcd (503 after its 1 s timeout without it), /metrics
// relays core etcd's (500 without it); /proxy/metrics is the proxy's own (200 either way) and
// /proxy/health answers 503 even with core etcd up (3.5.16 did with an advertised URL; without
// one it says "no connection to proxy"). (3.4.23 served only /health and /metrics.)
test("proxy metrics listener: paths with core etcd up, then stopped, then restarted", async (t) => {
  const paths = ["/health", "/metrics", "/proxy/health", "/proxy/metrics"] as const;
  const statuses = async (): Promise<Record<string, number>> =>
    Object.fromEntries(await Promise.all(paths.map(async (p) => [p, (await httpGet(metricsUrl(p))).status] as const)));

  const up = await statuses();
  t.diagnostic(`core up: ${JSON.stringify(up)}`);
  assert.equal(up["/health"], 200);
  assert.equal(up["/metrics"], 200);
  assert.match((await httpGet(metricsUrl("/metrics"))).body, /etcd_server_has_leader/, "/metrics relays core etcd's metrics");
  assert.deepEqual(up, { "/health": 200, "/metrics": 200, "/proxy/health": 503, "/proxy/metrics": 200 });

  await core.stop();
  await waitForProxyHealth(false);
  const down = await statuses();
  t.diagnostic(`core down: ${JSON.stringify(down)}`);
  const stillOk = paths.filter((p) => down[p] === 200);
  assert.ok(!stillOk.includes("/health") && !stillOk.includes("/metrics"), `still 200 without core: ${stillOk.join(", ")}`);
  assert.deepEqual(down, { "/health": 503, "/metrics": 500, "/proxy/health": 503, "/proxy/metrics": 200 });

  await core.start();
  await waitForProxyHealth(true);
  const put = await runEtcdctl(proxyEndpoint(), tenant, ["put", "after-restart", "ok"]);
  assert.equal(put.code, 0, put.stderr);
});
