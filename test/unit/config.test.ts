import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError, effectiveConfiguration, listenRefusal, loadConfig, VARIABLES } from "../../hooks/config.ts";

const base = { CORE_ETCD_ENDPOINTS: "https://10.0.0.1:2379,https://10.0.0.2:2379" };

test("defaults fill every optional setting", () => {
  assert.deepEqual(loadConfig(base), {
    port: 8080,
    host: "0.0.0.0",
    coreEtcdEndpoints: ["https://10.0.0.1:2379", "https://10.0.0.2:2379"],
    proxyNamespace: "kube-apiserver-storage",
    coreCaConfigMap: "etcd-coreserving-ca",
    coreClientSecret: "etcd-coreserving-cert",
    tenantPrefixRoot: "/etcdstorage/",
    etcdImage: "registry.k8s.io/etcd:3.6.14-0",
    clusterDomain: "cluster.local",
    logLevel: "info",
    bodyLimitBytes: 8 * 1024 * 1024,
    gatewayImage: "etcdstorage:0.1.0",
    defaultStorageQuota: "256Mi",
    defaultWriteBytesPerSecond: "256Ki",
    defaultRequestsPerSecond: 1000,
  });
});

const refused: [string, Record<string, string>, RegExp][] = [
  ["no endpoints", { CORE_ETCD_ENDPOINTS: "" }, /^CORE_ETCD_ENDPOINTS: is required/],
  ["a plain-http endpoint", { CORE_ETCD_ENDPOINTS: "http://10.0.0.1:2379" }, /^CORE_ETCD_ENDPOINTS: .* must use https/],
  ["an endpoint with a path", { CORE_ETCD_ENDPOINTS: "https://10.0.0.1:2379/x" }, /^CORE_ETCD_ENDPOINTS: /],
  ["root /", { TENANT_PREFIX_ROOT: "/" }, /^TENANT_PREFIX_ROOT: /],
  ["root inside /registry/", { TENANT_PREFIX_ROOT: "/registry/tenants/" }, /^TENANT_PREFIX_ROOT: .*overlaps/],
  ["root equal to /registry/", { TENANT_PREFIX_ROOT: "/registry/" }, /^TENANT_PREFIX_ROOT: .*overlaps/],
  ["root without trailing slash", { TENANT_PREFIX_ROOT: "/etcdstorage" }, /^TENANT_PREFIX_ROOT: .*start and end/],
  ["an image without a tag", { ETCD_IMAGE: "registry.k8s.io/etcd" }, /^ETCD_IMAGE: /],
  ["an old etcd 3.5", { ETCD_IMAGE: "registry.k8s.io/etcd:3.5.21-0" }, /^ETCD_IMAGE: .*3\.5\.33\+/],
  ["an old etcd 3.6", { ETCD_IMAGE: "registry.k8s.io/etcd:3.6.4-0" }, /^ETCD_IMAGE: /],
  ["etcd 3.4", { ETCD_IMAGE: "registry.k8s.io/etcd:3.4.23-0" }, /^ETCD_IMAGE: /],
  ["a bad port", { PORT: "http" }, /^PORT: /],
  ["a host with a space", { HOST: "not a host" }, /^HOST: "not a host" is neither an IP address nor a host name/],
  ["a host with a scheme", { HOST: "http://0.0.0.0" }, /^HOST: /],
  ["a bad namespace", { PROXY_NAMESPACE: "Kube_System" }, /^PROXY_NAMESPACE: /],
  ["a bad log level", { LOG_LEVEL: "loud" }, /^LOG_LEVEL: /],
  ["a tiny body limit", { BODY_LIMIT_BYTES: "10" }, /^BODY_LIMIT_BYTES: /],
  ["a gateway image without a tag", { GATEWAY_IMAGE: "ghcr.io/etcdproxy/etcdstorage-hooks" }, /^GATEWAY_IMAGE: .*tag or digest/],
  ["a gateway image whose only colon is the registry port", { GATEWAY_IMAGE: "mirror.example:5000/etcdstorage-hooks" }, /^GATEWAY_IMAGE: /],
  ["a gateway image with uppercase letters", { GATEWAY_IMAGE: "Etcdstorage:0.1.0" }, /^GATEWAY_IMAGE: /],
  ["a gateway image with a space", { GATEWAY_IMAGE: "etcdstorage:0.1.0 --privileged" }, /^GATEWAY_IMAGE: /],
  // A quota default is refused in the words of the spec.quota field it stands in for.
  ["a storage quota default that is not a quantity", { DEFAULT_STORAGE_QUOTA: "256MB" }, /^DEFAULT_STORAGE_QUOTA: the default of spec\.quota\.storage must be a quantity of bytes such as 256Mi, .* from 1Mi to 8Gi \(got "256MB"\)$/],
  ["a storage quota default under 1Mi", { DEFAULT_STORAGE_QUOTA: "1000Ki" }, /^DEFAULT_STORAGE_QUOTA: .* from 1Mi to 8Gi \(got "1000Ki"\)$/],
  ["a storage quota default over 8Gi", { DEFAULT_STORAGE_QUOTA: "10Gi" }, /^DEFAULT_STORAGE_QUOTA: .* from 1Mi to 8Gi \(got "10Gi"\)$/],
  ["a write rate default of a fraction of a byte", { DEFAULT_WRITE_BYTES_PER_SECOND: "0.5" }, /^DEFAULT_WRITE_BYTES_PER_SECOND: the default of spec\.quota\.writeBytesPerSecond must be a quantity of bytes per second .* from 1Ki to 16Mi \(got "0\.5"\)$/],
  ["a write rate default in exponent form", { DEFAULT_WRITE_BYTES_PER_SECOND: "1e6" }, /^DEFAULT_WRITE_BYTES_PER_SECOND: .* \(got "1e6"\)$/],
  ["a request rate default of 0", { DEFAULT_REQUESTS_PER_SECOND: "0" }, /^DEFAULT_REQUESTS_PER_SECOND: the default of spec\.quota\.requestsPerSecond must be >= 1 \(got 0\)$/],
  ["a request rate default over 100000", { DEFAULT_REQUESTS_PER_SECOND: "250000" }, /^DEFAULT_REQUESTS_PER_SECOND: .* must be <= 100000 \(got 250000\)$/],
  ["a fractional request rate default", { DEFAULT_REQUESTS_PER_SECOND: "2.5" }, /^DEFAULT_REQUESTS_PER_SECOND: the default of spec\.quota\.requestsPerSecond must be integer \(got "2\.5"\)$/],
  ["a request rate default that is a quantity", { DEFAULT_REQUESTS_PER_SECOND: "1k" }, /^DEFAULT_REQUESTS_PER_SECOND: .* must be integer \(got "1k"\)$/],
];

for (const [what, env, message] of refused) {
  test(`refuses ${what}, naming the variable`, () => {
    assert.throws(() => loadConfig({ ...base, ...env }), (error: unknown) => error instanceof ConfigError && message.test(error.message));
  });
}

test("accepts supported etcd images, mirrors and digests", () => {
  for (const image of ["registry.k8s.io/etcd:3.5.33-0", "registry.k8s.io/etcd:3.6.14-0", "registry.k8s.io/etcd:3.7.0-0", `mirror.example:5000/k8s/etcd:3.6.15-0@sha256:${"a".repeat(64)}`]) {
    assert.equal(loadConfig({ ...base, ETCD_IMAGE: image }).etcdImage, image);
  }
});

test("accepts gateway images with a tag, a digest, or both, from any registry", () => {
  for (const image of ["etcdstorage:0.2.0", "registry.example/platform/etcdstorage:0.2.0-rc.1", `mirror.example:5000/etcdproxy/etcdstorage-hooks:0.1.0@sha256:${"b".repeat(64)}`, `ghcr.io/etcdproxy/etcdstorage-hooks@sha256:${"c".repeat(64)}`]) {
    assert.equal(loadConfig({ ...base, GATEWAY_IMAGE: image }).gatewayImage, image);
  }
});

test("hosts: IPv4, IPv6 and host names in any case", () => {
  for (const host of ["0.0.0.0", "::", "fd00::1", "localhost", "Hooks.Example.com"]) assert.equal(loadConfig({ ...base, HOST: host }).host, host);
});

// A value for each variable that differs from its default, and the field it must land in.
const distinct: Record<keyof typeof VARIABLES, [string, unknown]> = {
  port: ["9090", 9090],
  host: ["127.0.0.1", "127.0.0.1"],
  coreEtcdEndpoints: ["https://etcd.example:2379", ["https://etcd.example:2379"]],
  proxyNamespace: ["proxies", "proxies"],
  coreCaConfigMap: ["core-ca", "core-ca"],
  coreClientSecret: ["core-client", "core-client"],
  tenantPrefixRoot: ["/tenants/", "/tenants/"],
  etcdImage: ["registry.k8s.io/etcd:3.6.15-0", "registry.k8s.io/etcd:3.6.15-0"],
  clusterDomain: ["cluster.example", "cluster.example"],
  logLevel: ["warn", "warn"],
  bodyLimitBytes: ["65536", 65536],
  gatewayImage: ["registry.example/etcdstorage:0.2.0", "registry.example/etcdstorage:0.2.0"],
  defaultStorageQuota: ["1.5Gi", "1.5Gi"],
  defaultWriteBytesPerSecond: ["1048576", "1048576"],
  defaultRequestsPerSecond: ["250", 250],
};

test("each setting is read from the variable VARIABLES names, and reported under it", () => {
  const env = Object.fromEntries(Object.entries(distinct).map(([field, [text]]) => [VARIABLES[field as keyof typeof VARIABLES], text]));
  const config = loadConfig(env);
  for (const [field, [, value]] of Object.entries(distinct)) assert.deepEqual(config[field as keyof typeof config], value, field);
  assert.deepEqual(effectiveConfiguration(config), Object.fromEntries(Object.entries(distinct).map(([field, [, value]]) => [VARIABLES[field as keyof typeof VARIABLES], value])));
});

test("listening: each system refusal names the variable to change; other errors are not configuration's", () => {
  const at = { host: "10.1.2.3", port: 80 };
  const blamed = (code: string) => listenRefusal(Object.assign(new Error(code), { code }), at)?.message;
  assert.match(blamed("EADDRINUSE")!, /^PORT: 80 is already in use on 10\.1\.2\.3/);
  assert.match(blamed("EACCES")!, /^PORT: listening on 10\.1\.2\.3:80 is not permitted/);
  for (const code of ["ENOTFOUND", "EAI_AGAIN", "EAI_FAIL", "EAI_NONAME"]) assert.match(blamed(code)!, /^HOST: "10\.1\.2\.3" does not resolve/, code);
  assert.match(blamed("EADDRNOTAVAIL")!, /^HOST: "10\.1\.2\.3" is not an address of this machine/);
  assert.equal(blamed("EMFILE"), undefined);
  assert.equal(listenRefusal(undefined, at), undefined);
});

test("quota defaults: the bounds of spec.quota are accepted, as written", () => {
  const config = loadConfig({ ...base, DEFAULT_STORAGE_QUOTA: "8Gi", DEFAULT_WRITE_BYTES_PER_SECOND: "1Ki", DEFAULT_REQUESTS_PER_SECOND: "100000" });
  assert.deepEqual([config.defaultStorageQuota, config.defaultWriteBytesPerSecond, config.defaultRequestsPerSecond], ["8Gi", "1Ki", 100000]);
  const low = loadConfig({ ...base, DEFAULT_STORAGE_QUOTA: "1Mi", DEFAULT_WRITE_BYTES_PER_SECOND: "16Mi", DEFAULT_REQUESTS_PER_SECOND: "1" });
  assert.deepEqual([low.defaultStorageQuota, low.defaultWriteBytesPerSecond, low.defaultRequestsPerSecond], ["1Mi", "16Mi", 1]);
});
