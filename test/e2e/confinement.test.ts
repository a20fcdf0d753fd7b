// Issue 7: through its own endpoint a tenant reaches only the etcd methods an aggregated API
// server needs. Real core etcd, real grpc-proxy and real nginx (Debian's), both containers
// started from exactly the returned Deployment and gateway ConfigMap. The one change to the
// ConfigMap is the port numbers of its listen and upstream lines (test/e2e/tenant.ts,
// withLocalPorts): suites run in parallel on one machine.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFile, stat } from "node:fs/promises";
import http2 from "node:http2";
import path from "node:path";
import { connect } from "node:tls";
import { after, before, describe, test } from "node:test";
import { sync } from "../../hooks/sync.ts";
import { nextRequest, syncRequest, etcdStorage, testConfig, unb64 } from "../support/requests.ts";
import { ETCDCTL, materializeVolumes, podSpecOf, startCoreEtcd, stopAll, tempDir, waitFor, type CoreEtcd, type K8sObject } from "./harness.ts";
import { find, objectsOf, relatedFor, startTenant, withLocalPorts, writeCredentials, type ApiServerCredentials, type RunningTenant } from "./tenant.ts";

const NS = "kube-apiserver-storage";
const spec = (name: string, extra: Record<string, unknown> = {}) => ({
  caCertConfigMap: [{ name: "etcd-serving-ca", namespace: `${name}-system` }],
  clientCertSecret: [{ name: "etcd-client-cert", namespace: `${name}-system` }],
  ...extra,
});
// The host cluster's own state, which no tenant may read, change or compact away.
const HOST_MARKER = "/registry/secrets/kube-system/host-marker";
const HOST_LEASED = "/registry/masterleases/10.0.0.1";
// nginx's default grpc_read_timeout (60 s) cut idle watches; an API server's watch may see nothing
// for 10 minutes (etcd's progress notification interval).
const IDLE_WATCH_MS = 65_000;
// The tenant is started 45 minutes in the past with one-hour serving certificates, so that a sync
// now renews its serving certificate (renewal at 2/3 of the lifetime).
const STARTED_AGO_MS = 45 * 60_000;

interface Streaming {
  output(): string;
  kill(): void;
  exited: Promise<number | null>;
}

/** etcdctl through the tenant's endpoint with its credentials, fed `input`; for watches and stdin. */
function etcdctlProcess(tenant: RunningTenant, args: readonly string[], input?: string | Buffer): Streaming {
  const { cacert, cert, key } = tenant.credentials;
  const child = spawn(ETCDCTL, [`--endpoints=${tenant.endpoint}`, `--cacert=${cacert}`, `--cert=${cert}`, `--key=${key}`, "--dial-timeout=2s", "--command-timeout=10s", ...args], {
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ETCDCTL_API: "3" },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")));
  child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")));
  child.stdin.end(input ?? "");
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  return { output: () => output, kill: () => void child.kill("SIGKILL"), exited };
}

async function etcdctlWithInput(tenant: RunningTenant, args: readonly string[], input: string | Buffer) {
  const run = etcdctlProcess(tenant, args, input);
  const timer = setTimeout(run.kill, 15_000);
  const code = await run.exited;
  clearTimeout(timer);
  return { code, output: run.output() };
}

/**
 * A gRPC Watch of `key` on one HTTP/2 stream through the gateway. Unlike etcdctl, which quietly
 * re-creates a cut watch, it shows whether the one stream stayed open.
 */
async function rawWatch(tenant: RunningTenant, key: string) {
  const [ca, cert, key_] = await Promise.all([tenant.credentials.cacert, tenant.credentials.cert, tenant.credentials.key].map((file) => readFile(file)));
  const session = http2.connect(tenant.endpoint, { ca, cert, key: key_, servername: "localhost" });
  const stream = session.request({ ":method": "POST", ":path": "/etcdserverpb.Watch/Watch", "content-type": "application/grpc", te: "trailers" });
  // WatchRequest{create_request(1): WatchCreateRequest{key(1)}}, in a gRPC length-prefixed frame.
  const create = Buffer.concat([Buffer.from([0x0a, key.length]), Buffer.from(key)]);
  const request = Buffer.concat([Buffer.from([0x0a, create.length]), create]);
  const frame = Buffer.alloc(5 + request.length);
  frame.writeUInt32BE(request.length, 1);
  request.copy(frame, 5);
  stream.write(frame); // never ended: the client side of the stream stays open, as an API server's does
  let received = Buffer.alloc(0);
  let closed = false;
  stream.on("data", (chunk: Buffer) => (received = Buffer.concat([received, chunk])));
  stream.on("close", () => (closed = true));
  stream.on("error", () => (closed = true));
  return { received: () => received, closed: () => closed, close: () => session.destroy() };
}

const json = (text: string) => JSON.parse(text) as { header: { revision: string | number }; kvs?: { mod_revision: number; value: string }[] };

describe("a tenant behind the API allowlist", () => {
  let dir: string;
  let core: CoreEtcd;
  let config: ReturnType<typeof testConfig>;
  let tenant: RunningTenant;
  let open: RunningTenant;
  let otherTenant: ApiServerCredentials;
  let markerRevision: number;
  let hostLease: string;
  let idleWatch: Awaited<ReturnType<typeof rawWatch>>;
  let idleSince: number;

  before(async () => {
    dir = await tempDir("confinement-");
    core = await startCoreEtcd(dir);
    config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });

    assert.equal((await core.etcdctl(["put", HOST_MARKER, "host-value"])).code, 0);
    markerRevision = json((await core.etcdctl(["get", HOST_MARKER, "-w", "json"])).stdout).kvs![0]!.mod_revision;
    hostLease = /lease ([0-9a-f]+) granted/.exec((await core.etcdctl(["lease", "grant", "3600"])).stdout)![1]!;
    assert.equal((await core.etcdctl(["put", HOST_LEASED, "10.0.0.1", `--lease=${hostLease}`])).code, 0);

    const openConfig = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint, TENANT_API_ALLOWLIST: "false" });
    [tenant, open] = await Promise.all([
      startTenant(config, core, "tenant-a", spec("tenant-a", { servingCertificateValidity: "1h" }), path.join(dir, "a"), new Date(Date.now() - STARTED_AGO_MS)),
      startTenant(openConfig, core, "tenant-open", spec("tenant-open"), path.join(dir, "open")),
    ]);
    // Another tenant's API server credentials (its pods need not run).
    const request = syncRequest(etcdStorage("tenant-b", spec("tenant-b")), relatedFor(config, core));
    otherTenant = await writeCredentials(find((await sync(request, config, new Date())).response, "Secret", "tenant-b-system", "etcd-client-cert"), path.join(dir, "b"));

    idleWatch = await rawWatch(tenant, "/registry/idle/key");
    idleSince = Date.now();
  });
  after(async () => {
    idleWatch?.close();
    await stopAll();
  });

  test("both containers run exactly the returned command; nginx reads the returned configuration with only its ports moved", async () => {
    const deployment = find(tenant.response, "Deployment", NS, "etcd-tenant-a") as K8sObject;
    const containers = podSpecOf(deployment).containers;
    assert.deepEqual(containers.map((c) => c.name), ["grpc-proxy", "gateway"]);
    const [proxyCommand, gatewayCommand] = containers.map((c) => c.command!);
    assert.equal(tenant.proxy.args.length, proxyCommand!.length - 1, "no flag added or dropped");
    assert.ok(tenant.proxy.args.includes(`--listen-addr=127.0.0.1:${tenant.upstreamPort}`), "grpc-proxy listens on loopback only");
    assert.deepEqual(tenant.gateway!.args, gatewayCommand!.slice(1).map((arg) => tenant.gateway!.rewritePath(arg)), "nginx runs the container's arguments");

    const returned = (find(tenant.response, "ConfigMap", NS, "etcd-tenant-a-gateway").data as Record<string, string>)["nginx.conf"]!.split("\n");
    const running = (await readFile(tenant.gateway!.rewritePath("/etc/etcd-gateway/nginx.conf"), "utf8")).split("\n");
    assert.equal(running.length, returned.length);
    const changed = returned.flatMap((line, i) => (line === running[i] ? [] : [`${line.trim()} -> ${running[i]!.trim()}`]));
    assert.deepEqual(changed, [
      `server 127.0.0.1:23790; -> server 127.0.0.1:${tenant.upstreamPort};`,
      `listen 2379 ssl http2; -> listen ${tenant.clientPort} ssl http2;`,
      `listen [::]:2379 ssl http2; -> listen [::]:${tenant.clientPort} ssl http2;`,
    ]);
  });

  test("what an API server does passes: KV and transactions, etcd-sized values, leases, watch, status", async () => {
    const prefix = "/etcdstorage/tenant-a/";
    assert.equal((await tenant.etcdctl(["put", "/registry/widgets/w1", "v1"])).stdout.trim(), "OK");
    assert.equal((await tenant.etcdctl(["get", "/registry/widgets/w1", "--print-value-only"])).stdout.trim(), "v1");
    assert.equal((await tenant.etcdctl(["del", "/registry/widgets/w1"])).stdout.trim(), "1");

    // kube-apiserver's Create: put only if the key does not exist yet.
    const txn = await etcdctlWithInput(tenant, ["txn"], 'mod("/registry/widgets/w2") = "0"\n\nput /registry/widgets/w2 created\n\nput /registry/widgets/w2 existed\n\n');
    assert.equal(txn.code, 0, txn.output);
    assert.match(txn.output, /^SUCCESS/);
    assert.equal((await core.etcdctl(["get", `${prefix}/registry/widgets/w2`, "--print-value-only"])).stdout.trim(), "created");

    // Above nginx's default body limit (1 MiB), within etcd's request limit (1.5 MiB).
    const big = "x".repeat(1_400_000);
    const put = await etcdctlWithInput(tenant, ["put", "/registry/widgets/big"], big);
    assert.equal(put.code, 0, put.output);
    const got = await etcdctlWithInput(tenant, ["get", "/registry/widgets/big", "--print-value-only"], "");
    assert.equal(got.output.trim().length, big.length);

    const status = await tenant.etcdctl(["endpoint", "status"]);
    assert.equal(status.code, 0, status.stderr);

    const lease = /lease ([0-9a-f]+) granted/.exec((await tenant.etcdctl(["lease", "grant", "60"])).stdout)?.[1];
    assert.ok(lease, "lease granted");
    assert.equal((await tenant.etcdctl(["put", "/registry/events/e1", "event", `--lease=${lease}`])).code, 0);
    assert.match((await tenant.etcdctl(["lease", "keep-alive", "--once", lease])).stdout, /keepalived with TTL\(60\)/);
    assert.match((await tenant.etcdctl(["lease", "timetolive", "--keys", lease])).stdout, /granted with TTL\(60s\).*attached keys\(\[\/registry\/events\/e1\]\)/);

    // A watch from the current revision: the event arrives whether the put is before or after the
    // watch is established.
    const revision = Number(json((await tenant.etcdctl(["get", "/registry/watched", "-w", "json"])).stdout).header.revision);
    const watch = etcdctlProcess(tenant, ["watch", "/registry/watched", `--rev=${revision + 1}`]);
    try {
      assert.equal((await tenant.etcdctl(["put", "/registry/watched", "changed"])).code, 0);
      await waitFor("the watch event", async () => /PUT\n\/registry\/watched\nchanged/.test(watch.output()), 10_000, watch.output);
    } finally {
      watch.kill();
    }
  });

  // Each refused call names the gRPC method it tried: the message is what the user sees.
  const refused: [what: string, args: () => string[], method: string][] = [
    ["snapshot save", () => ["snapshot", "save", path.join(dir, "stolen.db")], "/etcdserverpb.Maintenance/Snapshot"],
    ["member list", () => ["member", "list"], "/etcdserverpb.Cluster/MemberList"],
    ["compaction", () => ["compaction", String(markerRevision + 1)], "/etcdserverpb.KV/Compact"],
    ["defragment", () => ["defrag"], "/etcdserverpb.Maintenance/Defragment"],
    ["alarm list", () => ["alarm", "list"], "/etcdserverpb.Maintenance/Alarm"],
    ["lease revoke of the host's lease", () => ["lease", "revoke", hostLease], "/etcdserverpb.Lease/LeaseRevoke"],
    ["lease list", () => ["lease", "list"], "/etcdserverpb.Lease/LeaseLeases"],
    ["hash of the key space", () => ["endpoint", "hashkv"], "/etcdserverpb.Maintenance/HashKV"],
    ["leader transfer", () => ["move-leader", "1"], "/etcdserverpb.Maintenance/MoveLeader"],
    ["user list", () => ["user", "list"], "/etcdserverpb.Auth/UserList"],
  ];
  for (const [what, args, method] of refused) {
    test(`${what} is refused with PERMISSION_DENIED`, async () => {
      const result = await tenant.etcdctl(args());
      assert.notEqual(result.code, 0, result.stdout);
      assert.match(result.stderr, /code = PermissionDenied desc = etcdstorage: (\S+) is not on the etcd API allowlist for tenants/);
      assert.ok(result.stderr.includes(`${method} is not on`), result.stderr);
    });
  }

  test("after the attempts the host cluster is intact: its keys, its lease, its history", async () => {
    assert.equal((await core.etcdctl(["get", HOST_MARKER, "--print-value-only"])).stdout.trim(), "host-value");
    const old = await core.etcdctl(["get", HOST_MARKER, `--rev=${markerRevision}`, "--print-value-only"]);
    assert.equal(old.code, 0, `revision ${markerRevision} was compacted: ${old.stderr}`);
    assert.equal(old.stdout.trim(), "host-value");
    assert.match((await core.etcdctl(["lease", "timetolive", "--keys", hostLease])).stdout, new RegExp(`attached keys\\(\\[${HOST_LEASED}\\]\\)`));
    assert.equal((await core.etcdctl(["get", HOST_LEASED, "--print-value-only"])).stdout.trim(), "10.0.0.1");
    await assert.rejects(stat(path.join(dir, "stolen.db")), "no snapshot was written");
  });

  test("a client without a certificate, or with another tenant's, is refused before any method", async () => {
    const withoutCertificate = await tenant.etcdctl(["put", "/registry/no-certificate", "x"], { cert: undefined, key: undefined });
    const otherCertificate = await tenant.etcdctl(["put", "/registry/other-certificate", "x"], { cert: otherTenant.cert, key: otherTenant.key });
    for (const result of [withoutCertificate, otherCertificate]) {
      assert.notEqual(result.code, 0);
      assert.match(result.stderr, /code = Unauthenticated desc = etcdstorage: a client certificate issued by this tenant's client CA is required/);
    }
    const stored = await core.etcdctl(["get", "/etcdstorage/", "--prefix", "--keys-only"]);
    assert.doesNotMatch(stored.stdout, /no-certificate|other-certificate/);
  });

  test("a path that only normalizes to an allowed method is refused (grpc_pass forwards the path as sent)", async () => {
    const [ca, cert, key] = await Promise.all([tenant.credentials.cacert, tenant.credentials.cert, tenant.credentials.key].map((file) => readFile(file)));
    const session = http2.connect(tenant.endpoint, { ca, cert, key, servername: "localhost" });
    try {
      for (const sneaky of ["/etcdserverpb.Maintenance/Snapshot/../../etcdserverpb.KV/Range", "/etcdserverpb.KV/%52ange", "/etcdserverpb.KV/Range?x"]) {
        const headers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
          const stream = session.request({ ":method": "POST", ":path": sneaky, "content-type": "application/grpc", te: "trailers" });
          stream.on("response", resolve).on("error", reject).resume();
          stream.end(Buffer.alloc(5));
        });
        assert.equal(headers[":status"], 400, sneaky);
      }
    } finally {
      session.close();
    }
  });

  test("a renewed serving certificate is served without restarting the pod, and rolls nothing", async () => {
    const renewed = (await sync(nextRequest(tenant.request, tenant.response), config, new Date())).response;
    const serving = (r: typeof renewed) => unb64((find(r, "Secret", NS, "etcd-tenant-a-server-tls").data as Record<string, string>)["tls.crt"]);
    assert.notEqual(serving(renewed), serving(tenant.response), "the serving certificate was renewed");
    const template = (r: typeof renewed) => (find(r, "Deployment", NS, "etcd-tenant-a").spec as any).template;
    assert.deepEqual(template(renewed), template(tenant.response), "the pod template is unchanged: no roll");

    // What the kubelet does with an updated Secret: the projected files change in place.
    const deployment = find(renewed, "Deployment", NS, "etcd-tenant-a") as K8sObject;
    const podSpec = podSpecOf(deployment);
    const objects = withLocalPorts(objectsOf(tenant.request, renewed), "etcd-tenant-a-gateway", { client: tenant.clientPort, upstream: tenant.upstreamPort });
    await materializeVolumes(podSpec, podSpec.containers.find((c) => c.name === "gateway")!, objects, path.join(dir, "a", "proxy", "root"), NS);

    const [ca, cert, key] = await Promise.all([tenant.credentials.cacert, tenant.credentials.cert, tenant.credentials.key].map((file) => readFile(file)));
    const served = await new Promise<string>((resolve, reject) => {
      const socket = connect({ host: "127.0.0.1", port: tenant.clientPort, servername: "etcd-tenant-a.kube-apiserver-storage.svc", ca, cert, key, ALPNProtocols: ["h2"] }, () => {
        resolve(socket.getPeerX509Certificate()!.toString());
        socket.end();
      });
      socket.on("error", reject);
    });
    assert.equal(served.trim(), serving(renewed).trim(), "the new certificate is served at the next handshake");
    assert.equal(tenant.gateway!.process.exitCode, null, "nginx kept running");
    assert.equal((await tenant.etcdctl(["put", "/registry/after-renewal", "ok"])).code, 0);
  });

  test("with the allowlist turned off by hook configuration, the proxy answers maintenance calls again", async () => {
    assert.equal(open.gateway, undefined, "no gateway container");
    assert.equal((await open.etcdctl(["put", "/registry/widgets/w1", "open"])).code, 0);
    assert.equal((await core.etcdctl(["get", "/etcdstorage/tenant-open//registry/widgets/w1", "--print-value-only"])).stdout.trim(), "open", "keys are still confined");
    const members = await open.etcdctl(["member", "list"]);
    assert.equal(members.code, 0, "what is lost: Cluster, Maintenance, Compact, LeaseRevoke and LeaseLeases reach core etcd");
  });

  test("an idle watch stream outlives nginx's default stream timeouts and still receives its event", async () => {
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, idleSince + IDLE_WATCH_MS - Date.now())));
    assert.equal(idleWatch.closed(), false, `the watch stream was cut after less than ${IDLE_WATCH_MS} ms idle`);
    assert.equal((await tenant.etcdctl(["put", "/registry/idle/key", "late-event"])).code, 0);
    await waitFor("the idle watch's event", async () => idleWatch.received().includes("late-event"), 10_000);
    assert.equal(idleWatch.closed(), false);
  });
});
