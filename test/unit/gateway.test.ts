// The API allowlist (issue 7): the generated nginx configuration, and the proxy pod with the
// gateway on (the default) and off (hook configuration only).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { before, describe, test } from "node:test";
import { trustChecksum } from "../../hooks/children/deployment.ts";
import { ALLOWED_METHODS, nginxConfig } from "../../hooks/children/gateway.ts";
import type { HookRequest, HookResponse, KubeObject } from "../../hooks/observed.ts";
import { sync } from "../../hooks/sync.ts";
import { restrictedViolations } from "../support/pod-security.ts";
import { child, coreRelated, etcdStorage, makeCorePki, SAMPLE_SPEC, syncRequest, testConfig } from "../support/requests.ts";

const conf = nginxConfig("t");
/** The directives of one `location` block, by its match (e.g. "= /etcdserverpb.KV/Range", "/"). */
function locations(text: string): Map<string, string[]> {
  const found = new Map<string, string[]>();
  for (const match of text.matchAll(/^\s*location\s+([^{]+?)\s*\{([^}]*)\}/gm)) {
    const directives = match[2]!.split("\n").map((line) => line.trim()).filter((line) => line && !line.startsWith("#"));
    found.set(match[1]!, directives);
  }
  return found;
}
/** The server block's own directives (outside every location and if). */
const serverLevel = conf
  .slice(conf.indexOf("server {"))
  .replace(/^\s*(location|if)\b[^{]*\{[^}]*\}/gm, "")
  .split("\n")
  .map((line) => line.trim());

describe("the generated nginx configuration", () => {
  test("the allowlist is exactly the methods kube-apiserver's storage layer needs, as the issue lists them", () => {
    assert.deepEqual(
      ALLOWED_METHODS.map((m) => m.method),
      [
        "/etcdserverpb.KV/Range",
        "/etcdserverpb.KV/Put",
        "/etcdserverpb.KV/DeleteRange",
        "/etcdserverpb.KV/Txn",
        "/etcdserverpb.Watch/Watch",
        "/etcdserverpb.Lease/LeaseGrant",
        "/etcdserverpb.Lease/LeaseKeepAlive",
        "/etcdserverpb.Lease/LeaseTimeToLive",
        "/etcdserverpb.Maintenance/Status",
      ],
    );
  });

  test("every allowed method has its own exact location that passes it to the proxy", () => {
    const found = locations(conf);
    for (const { method } of ALLOWED_METHODS) {
      assert.ok(found.get(`= ${method}`)?.includes("grpc_pass grpc://etcd_grpc_proxy;"), `${method} passes`);
    }
  });

  test("nothing else passes: every other path gets PERMISSION_DENIED, a client without a valid certificate UNAUTHENTICATED", () => {
    const found = locations(conf);
    assert.deepEqual([...found.keys()].sort(), [...ALLOWED_METHODS.map((m) => `= ${m.method}`), "/", "@unauthenticated"].sort(), "no prefix or regex location");
    assert.equal(conf.match(/^\s*grpc_pass /gm)?.length, ALLOWED_METHODS.length, "grpc_pass appears only in the allowed locations");
    assert.deepEqual(found.get("/"), [
      "default_type application/grpc;",
      "add_header grpc-status 7 always;",
      'add_header grpc-message "etcdstorage: $uri is not on the etcd API allowlist for tenants" always;',
      "return 200;",
    ]);
    assert.ok(found.get("@unauthenticated")?.includes("add_header grpc-status 16 always;"));
    assert.match(conf, /^\s*error_page 495 496 = @unauthenticated;$/m);
    // grpc_pass forwards the path as sent, locations match it normalized: anything else is refused first.
    assert.match(conf, /if \(\$request_uri != \$uri\) \{\s*return 400;\s*\}/);
  });

  test("mTLS with the tenant's serving certificate and client-CA bundle, on the Service port, IPv4 and IPv6", () => {
    for (const line of [
      "listen 2379 ssl http2;",
      "listen [::]:2379 ssl http2;",
      "ssl_certificate tls.crt$read_per_handshake;",
      "ssl_certificate_key tls.key$read_per_handshake;",
      "ssl_client_certificate client-ca.crt;",
      "ssl_verify_client on;",
      "ssl_protocols TLSv1.2 TLSv1.3;",
    ]) {
      assert.ok(serverLevel.includes(line), line);
    }
    assert.match(conf, /map \$ssl_server_name \$read_per_handshake \{\s*default "";\s*\}/, "the certificate path variable is always empty");
  });

  test("the upstream is grpc-proxy on the pod's loopback", () => {
    assert.match(conf, /upstream etcd_grpc_proxy \{\s*server 127\.0\.0\.1:23790;\s*keepalive \d+;\s*\}/);
    assert.doesNotMatch(conf, /grpcs:\/\//, "plain gRPC inside the pod");
  });

  test("long-lived streams are not cut and etcd-sized requests fit", () => {
    for (const line of ["grpc_read_timeout 1d;", "grpc_send_timeout 1d;", "client_body_timeout 1d;"]) assert.ok(serverLevel.includes(line), line);
    // etcd's default --max-request-bytes is 1.5 MiB; nginx's default (1m) would refuse such requests.
    assert.ok(serverLevel.includes("client_max_body_size 2m;"));
    const found = locations(conf);
    for (const { method, stream } of ALLOWED_METHODS) {
      // nginx counts a stream's messages together over the life of the call.
      assert.equal(found.get(`= ${method}`)?.includes("client_max_body_size 0;"), stream === true, method);
    }
    assert.deepEqual(ALLOWED_METHODS.filter((m) => m.stream).map((m) => m.method), ["/etcdserverpb.Watch/Watch", "/etcdserverpb.Lease/LeaseKeepAlive"]);
  });

  test("runs in the foreground, writes only under its prefix (an emptyDir), and works on nginx 1.22 as on newer", () => {
    for (const line of ["daemon off;", "pid nginx.pid;", "error_log stderr warn;"]) assert.match(conf, new RegExp(`^${line.replace(/[.$]/g, "\\$&")}$`, "m"));
    for (const temp of ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]) assert.match(conf, new RegExp(`^\\s*${temp}_temp_path ${temp}_temp;$`, "m"), `${temp}_temp_path is relative`);
    assert.doesNotMatch(conf, /^\s*http2 on;/m, "the http2 directive exists only from 1.25.1");
    assert.doesNotMatch(conf, /^\s*user\b/m);
    assert.doesNotMatch(conf.replace(/^\s*#.*$/gm, ""), /\s\/(?!etcdserverpb\.)[a-z]/, "no absolute file path");
  });
});

describe("the proxy pod", () => {
  let related: HookRequest["related"];
  const now = new Date("2027-06-01T00:00:00Z");
  before(async () => {
    related = coreRelated(testConfig(), await makeCorePki(new Date("2027-01-01T00:00:00Z"), 2));
  });
  const answer = async (env: Record<string, string> = {}) => {
    const config = testConfig(env);
    const { response } = await sync(syncRequest(etcdStorage("t", SAMPLE_SPEC), related), config, now);
    return { config, response };
  };
  const podSpec = (r: HookResponse) => (child(r, "Deployment", "kube-apiserver-storage", "etcd-t").spec as any).template.spec;
  const container = (r: HookResponse, name: string) => podSpec(r).containers.find((c: { name: string }) => c.name === name);
  const checksum = (r: HookResponse) => (child(r, "Deployment", "kube-apiserver-storage", "etcd-t").spec as any).template.metadata.annotations["etcdproxy.dev/trust-checksum"];

  function assertConsistent(r: HookResponse) {
    const spec = podSpec(r);
    assert.deepEqual(restrictedViolations(spec), [], "restricted Pod Security");
    const volumes = new Set(spec.volumes.map((v: { name: string }) => v.name));
    const mounted = new Set(spec.containers.flatMap((c: any) => c.volumeMounts.map((m: { name: string }) => m.name)));
    assert.deepEqual([...mounted].filter((n) => !volumes.has(n)), [], "every mount has a volume");
    assert.deepEqual([...volumes].filter((n) => !mounted.has(n)), [], "every volume is mounted");
    const service = child(r, "Service", "kube-apiserver-storage", "etcd-t").spec as any;
    const clientPorts = spec.containers.flatMap((c: any) => c.ports.filter((p: { name: string }) => p.name === service.ports[0].targetPort));
    assert.deepEqual(clientPorts, [{ name: "client", containerPort: 2379, protocol: "TCP" }], "the Service's targetPort names exactly one container port");
  }

  test("with the allowlist (default): nginx in front, grpc-proxy on loopback without TLS of its own", async () => {
    const { response } = await answer();
    assertConsistent(response);
    assert.deepEqual(podSpec(response).containers.map((c: { name: string }) => c.name), ["grpc-proxy", "gateway"]);
    const proxy = container(response, "grpc-proxy");
    assert.ok(proxy.command.includes("--listen-addr=127.0.0.1:23790"));
    assert.ok(proxy.command.includes("--advertise-client-url=http://127.0.0.1:23790"));
    assert.deepEqual(proxy.command.filter((f: string) => /^--(cert-file|key-file|trusted-ca-file)=/.test(f)), []);
    assert.deepEqual(proxy.ports.map((p: { name: string }) => p.name), ["metrics"]);
    assert.equal(proxy.readinessProbe.httpGet.path, "/health");

    const gateway = container(response, "gateway");
    assert.equal(gateway.image, "nginxinc/nginx-unprivileged:1.28-alpine");
    assert.deepEqual(gateway.command, ["/usr/sbin/nginx", "-p", "/tmp/", "-c", "/etc/etcd-gateway/nginx.conf", "-e", "stderr"]);
    assert.deepEqual(gateway.readinessProbe.tcpSocket, { port: "client" });
    assert.deepEqual(gateway.livenessProbe.tcpSocket, { port: "client" });
    assert.equal(gateway.securityContext.readOnlyRootFilesystem, true);

    const projected = podSpec(response).volumes.find((v: { name: string }) => v.name === "gateway").projected;
    assert.deepEqual(
      projected.sources.map((s: any) => [s.configMap?.name ?? s.secret?.name, s.configMap?.items ?? s.secret?.items]),
      [
        ["etcd-t-gateway", [{ key: "nginx.conf", path: "nginx.conf" }]],
        ["etcd-t-server-tls", [{ key: "tls.crt", path: "tls.crt" }, { key: "tls.key", path: "tls.key" }]],
        ["etcd-t-trusted-ca", [{ key: "ca.crt", path: "client-ca.crt" }]],
      ],
    );
    const configMap = child(response, "ConfigMap", "kube-apiserver-storage", "etcd-t-gateway") as KubeObject & { data: Record<string, string> };
    assert.equal(configMap.data["nginx.conf"], nginxConfig("t"));
    assert.equal(configMap.metadata.labels?.["app.kubernetes.io/component"], "gateway");
  });

  test("with TENANT_API_ALLOWLIST=false: the proxy serves the tenant's mTLS itself, as before, and there is no gateway", async () => {
    const { response } = await answer({ TENANT_API_ALLOWLIST: "false" });
    assertConsistent(response);
    assert.deepEqual(podSpec(response).containers.map((c: { name: string }) => c.name), ["grpc-proxy"]);
    const proxy = container(response, "grpc-proxy");
    for (const flag of ["--listen-addr=0.0.0.0:2379", "--cert-file=/etc/etcd-proxy/server-tls/tls.crt", "--key-file=/etc/etcd-proxy/server-tls/tls.key", "--trusted-ca-file=/etc/etcd-proxy/trusted-ca/ca.crt"]) {
      assert.ok(proxy.command.includes(flag), flag);
    }
    assert.equal(response.children.find((c) => c.metadata.name === "etcd-t-gateway"), undefined, "no gateway ConfigMap: Metacontroller deletes one left from before");
  });

  test("the checksum covers the nginx configuration; a serving certificate is read at each handshake and rolls nothing", async () => {
    const material = { trustedClientCaPem: "client CA", coreCaPem: "core CA", coreClientCertPem: "core client" };
    const before = createHash("sha256");
    for (const part of ["client CA", "core CA", "core client"]) before.update(part).update("\0");
    assert.equal(trustChecksum(material), before.digest("hex"), "without the gateway: the checksum of earlier releases");
    assert.notEqual(trustChecksum({ ...material, nginxConfig: nginxConfig("t") }), trustChecksum(material));
    assert.notEqual(trustChecksum({ ...material, nginxConfig: nginxConfig("t") }), trustChecksum({ ...material, nginxConfig: nginxConfig("u") }));

    const on = await answer();
    const off = await answer({ TENANT_API_ALLOWLIST: "false" });
    assert.notEqual(checksum(on.response), checksum(off.response), "turning the allowlist on or off rolls the pods");
  });
});
