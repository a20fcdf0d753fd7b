import assert from "node:assert/strict";
import { test } from "node:test";
import { tenantNames, MAX_TENANT_NAME_LENGTH } from "../../hooks/names.ts";
import { QUANTITY } from "../../hooks/quantity.ts";
import { readSpec } from "../../hooks/spec.ts";
import { etcdStorageSchema } from "../../hooks/schema.ts";
import { testConfig } from "../support/requests.ts";

const config = testConfig();
const parent = (spec: unknown, name = "sample") => ({ metadata: { name }, spec });
const problems = (spec: unknown, name = "sample") => {
  const result = readSpec(parent(spec, name), config);
  assert.equal(result.valid, false, "expected an invalid spec");
  return result.valid ? [] : result.problems;
};

test("defaults come from the schema, the quota's from the configuration", () => {
  assert.deepEqual(readSpec(parent({}), config), {
    valid: true,
    spec: {
      caCertConfigMap: [],
      clientCertSecret: [],
      replicas: 2,
      resources: { requests: { cpu: "50m", memory: "96Mi" }, limits: { memory: "256Mi" } },
      deletionPolicy: "Delete",
      quota: { storage: { quantity: "256Mi", bytes: 268435456 }, writeBytesPerSecond: { quantity: "256Ki", bytes: 262144 }, requestsPerSecond: 1000 },
      signingCertificateValidity: 87600 * 3600_000,
      servingCertificateValidity: 8760 * 3600_000,
      clientCertificateValidity: 8760 * 3600_000,
    },
  });
});

test("resources: set, they replace the default whole, as in a Pod; requests may equal limits in any notation", () => {
  const resources = (value: unknown) => {
    const result = readSpec(parent({ resources: value }), config);
    assert.ok(result.valid, result.valid ? "" : result.problems.join("; "));
    return result.spec.resources;
  };
  assert.deepEqual(resources({ requests: { memory: "128Mi" } }), { requests: { memory: "128Mi" } });
  assert.deepEqual(resources({ requests: { cpu: "0.5", memory: "1Gi" }, limits: { cpu: "500m", memory: "1024Mi" } }), { requests: { cpu: "0.5", memory: "1Gi" }, limits: { cpu: "500m", memory: "1024Mi" } });
  assert.deepEqual(resources({ requests: { cpu: 1 }, limits: { cpu: "1000m" } }), { requests: { cpu: 1 }, limits: { cpu: "1000m" } });
  assert.deepEqual(resources({}), {});
  // A field the API server would prune never reaches the container.
  assert.deepEqual(resources({ requests: { cpu: "1", "ephemeral-storage": "1Gi" }, claims: [{ name: "x" }] }), { requests: { cpu: "1" } });
});

test("quota: each field given is in effect as written and in whole bytes, rounded down; each left out is the configured default", () => {
  const quota = (value: unknown, defaults: Record<string, string> = {}) => {
    const result = readSpec(parent({ quota: value }), testConfig(defaults));
    assert.ok(result.valid, result.valid ? "" : result.problems.join("; "));
    return result.spec.quota;
  };
  assert.deepEqual(quota({ storage: "1Gi", writeBytesPerSecond: "1.5Ki", requestsPerSecond: 50 }), {
    storage: { quantity: "1Gi", bytes: 1073741824 },
    writeBytesPerSecond: { quantity: "1.5Ki", bytes: 1536 },
    requestsPerSecond: 50,
  });
  // decimal suffixes, integers, and fractions of a byte that round down
  assert.deepEqual(quota({ storage: 5000000, writeBytesPerSecond: "2000.9" }), {
    storage: { quantity: "5000000", bytes: 5000000 },
    writeBytesPerSecond: { quantity: "2000.9", bytes: 2000 },
    requestsPerSecond: 1000,
  });
  assert.deepEqual(quota({ storage: "1.0000001Gi", writeBytesPerSecond: "2k" }).storage, { quantity: "1.0000001Gi", bytes: 1073741931 });
  assert.deepEqual(quota({ writeBytesPerSecond: "2k" }).writeBytesPerSecond, { quantity: "2k", bytes: 2000 });
  // the defaults, as the configuration writes them
  const defaults = { DEFAULT_STORAGE_QUOTA: "2G", DEFAULT_WRITE_BYTES_PER_SECOND: "1Mi", DEFAULT_REQUESTS_PER_SECOND: "300" };
  assert.deepEqual(quota(undefined, defaults), { storage: { quantity: "2G", bytes: 2e9 }, writeBytesPerSecond: { quantity: "1Mi", bytes: 1048576 }, requestsPerSecond: 300 });
  assert.deepEqual(quota({ requestsPerSecond: 7 }, defaults), { storage: { quantity: "2G", bytes: 2e9 }, writeBytesPerSecond: { quantity: "1Mi", bytes: 1048576 }, requestsPerSecond: 7 });
  // The same spec read under other defaults is read again, not served from the cache.
  assert.equal(quota({}).storage.bytes, 268435456);
  assert.equal(quota({}, { DEFAULT_STORAGE_QUOTA: "512Mi" }).storage.bytes, 536870912);
});

test("the parent is never modified", () => {
  const spec = { replicas: 3 };
  readSpec(parent(spec), config);
  assert.deepEqual(spec, { replicas: 3 });
});

const invalid: [string, unknown, RegExp][] = [
  // What a duration looks like and its bounds, never the regular expression behind it.
  ["a malformed duration", { servingCertificateValidity: "1 year" }, /^spec\.servingCertificateValidity: must be a duration such as 8760h \(a year\), 720h \(30 days\) or 30m: .* from 10m to 876000h \(100 years\) \(got "1 year"\)$/],
  ["a duration in days", { signingCertificateValidity: "3650d" }, /^spec\.signingCertificateValidity: must be a duration such as 8760h .* \(got "3650d"\)$/],
  ["a validity under 10m", { clientCertificateValidity: "5m" }, /^spec\.clientCertificateValidity: must be a duration such as .* from 10m to 876000h \(100 years\) \(got "5m"\)$/],
  ["a validity over 100 years", { signingCertificateValidity: "876001h" }, /^spec\.signingCertificateValidity: must be a duration such as .* \(got "876001h"\)$/],
  ["a leaf longer than its CA", { signingCertificateValidity: "100h", servingCertificateValidity: "200h", clientCertificateValidity: "50h" }, /^spec\.servingCertificateValidity: servingCertificateValidity must not be longer than signingCertificateValidity/],
  ["zero replicas", { replicas: 0 }, /^spec\.replicas: must be >= 1 \(got 0\)/],
  ["a memory request above its limit", { resources: { requests: { memory: "512Mi" }, limits: { memory: "256Mi" } } }, /^spec\.resources\.requests\.memory: must not be more than limits\.memory \(got "512Mi"\)$/],
  ["a cpu request above its limit, in other notations", { resources: { requests: { cpu: 2 }, limits: { cpu: "1500m" } } }, /^spec\.resources\.requests\.cpu: must not be more than limits\.cpu \(got 2\)$/],
  ["a cpu request a milli-core above its limit", { resources: { requests: { cpu: "0.501" }, limits: { cpu: "500m" } } }, /^spec\.resources\.requests\.cpu: must not be more than limits\.cpu/],
  ["a quantity that is not one", { resources: { limits: { memory: "lots" } } }, /^spec\.resources\.limits\.memory: must be a quantity such as 500m, "0\.5", 64Mi or 1Gi: .* \(got "lots"\)$/],
  ["a quantity in exponent form", { resources: { limits: { memory: "1e9" } } }, /^spec\.resources\.limits\.memory: must be a quantity such as/],
  ["a negative quantity", { resources: { requests: { cpu: -1 } } }, /^spec\.resources\.requests\.cpu: must be a quantity such as .* \(got -1\)$/],
  ["negative replicas", { replicas: -2 }, /^spec\.replicas: must be >= 1/],
  // spec.quota: the shape of a value and its bounds in one message, whatever is wrong with it.
  ["a storage quota that is not a quantity", { quota: { storage: "lots" } }, /^spec\.quota\.storage: must be a quantity of bytes such as 256Mi, 1Gi or 1073741824 \(a number and an optional suffix such as Ki, Mi, Gi, k, M or G\), from 1Mi to 8Gi \(got "lots"\)$/],
  ["a storage quota in exponent form", { quota: { storage: "2e9" } }, /^spec\.quota\.storage: must be a quantity of bytes .* from 1Mi to 8Gi \(got "2e9"\)$/],
  ["a storage quota a byte under 1Mi", { quota: { storage: 1048575 } }, /^spec\.quota\.storage: must be a quantity of bytes .* from 1Mi to 8Gi \(got 1048575\)$/],
  ["a storage quota of a fraction of a byte", { quota: { storage: "500m" } }, /^spec\.quota\.storage: .* from 1Mi to 8Gi \(got "500m"\)$/],
  ["a storage quota over 8Gi", { quota: { storage: "8.001Gi" } }, /^spec\.quota\.storage: .* from 1Mi to 8Gi \(got "8\.001Gi"\)$/],
  ["a negative storage quota", { quota: { storage: -1 } }, /^spec\.quota\.storage: .* from 1Mi to 8Gi \(got -1\)$/],
  ["a storage quota of another type", { quota: { storage: true } }, /^spec\.quota\.storage: must be integer/],
  ["a write rate that is not a quantity", { quota: { writeBytesPerSecond: "fast" } }, /^spec\.quota\.writeBytesPerSecond: must be a quantity of bytes per second such as 256Ki, 1Mi or 65536 \(a number and an optional suffix such as Ki, Mi, k or M\), from 1Ki to 16Mi \(got "fast"\)$/],
  ["a write rate a byte under 1Ki", { quota: { writeBytesPerSecond: "1023" } }, /^spec\.quota\.writeBytesPerSecond: .* from 1Ki to 16Mi \(got "1023"\)$/],
  ["a write rate of 0.5 bytes, which rounds to none", { quota: { writeBytesPerSecond: "0.5" } }, /^spec\.quota\.writeBytesPerSecond: .* from 1Ki to 16Mi \(got "0\.5"\)$/],
  ["a write rate over 16Mi", { quota: { writeBytesPerSecond: "17M" } }, /^spec\.quota\.writeBytesPerSecond: .* from 1Ki to 16Mi \(got "17M"\)$/],
  ["no requests per second", { quota: { requestsPerSecond: 0 } }, /^spec\.quota\.requestsPerSecond: must be >= 1 \(got 0\)$/],
  ["more than 100000 requests per second", { quota: { requestsPerSecond: 100001 } }, /^spec\.quota\.requestsPerSecond: must be <= 100000 \(got 100001\)$/],
  ["a fractional request rate", { quota: { requestsPerSecond: 2.5 } }, /^spec\.quota\.requestsPerSecond: must be integer \(got 2\.5\)$/],
  ["a request rate as a string", { quota: { requestsPerSecond: "1000" } }, /^spec\.quota\.requestsPerSecond: must be integer \(got "1000"\)$/],
  ["a quota that is not an object", { quota: "256Mi" }, /^spec\.quota: must be object \(got "256Mi"\)$/],
  ["a destination without namespace", { clientCertSecret: [{ name: "x" }] }, /^spec\.clientCertSecret\[0\]\.namespace: is required/],
  ["a bad destination name", { caCertConfigMap: [{ name: "Bad_Name", namespace: "ns" }] }, /^spec\.caCertConfigMap\[0\]\.name: must match pattern/],
  ["a duplicate destination", { caCertConfigMap: [{ name: "a", namespace: "b" }, { name: "a", namespace: "b" }] }, /^spec\.caCertConfigMap\[1\]: duplicate entry/],
  ["an unknown deletion policy", { deletionPolicy: "Orphan" }, /^spec\.deletionPolicy: must be equal to one of the allowed values: Delete, Retain/],
  ["a spec that is not an object", "yes", /^spec: must be object/],
  ["a destination in the proxy namespace", { clientCertSecret: [{ name: "etcd-x-serving-ca", namespace: "kube-apiserver-storage" }] }, /^spec\.clientCertSecret\[0\]\.namespace: must not be the proxy namespace/],
];
for (const [what, spec, message] of invalid) {
  test(`${what} is refused with the field named`, () => {
    assert.ok(problems(spec).some((p) => message.test(p)), `no problem matches ${message}: ${JSON.stringify(problems(spec))}`);
  });
}

test("names: only DNS-1035 labels short enough for every child name", () => {
  assert.equal(MAX_TENANT_NAME_LENGTH, 47);
  assert.ok(JSON.stringify(etcdStorageSchema).includes(`size(self.metadata.name) <= ${MAX_TENANT_NAME_LENGTH}`), "the schema's name rule follows names.ts");
  const longest = `a${"b".repeat(MAX_TENANT_NAME_LENGTH - 1)}`;
  assert.equal(readSpec(parent({}, longest), config).valid, true);
  for (const name of Object.values(tenantNames(longest))) {
    assert.ok(name.length <= 63 && /^[a-z]([-a-z0-9]*[a-z0-9])?$/.test(name), `${name} is a valid DNS-1035 label`);
  }
  for (const bad of [`${longest}c`, "1abc", "a.b", "registry/x", "a_b", "abc-"]) {
    assert.match(problems({}, bad)[0]!, /^metadata\.name must be a DNS-1035 label/, bad);
  }
});

test("quota: the bounds themselves are accepted, in any notation of the grammar", () => {
  for (const quota of [
    { storage: "1Mi", writeBytesPerSecond: "1Ki", requestsPerSecond: 1 },
    { storage: "8Gi", writeBytesPerSecond: "16Mi", requestsPerSecond: 100000 },
    { storage: 1048576, writeBytesPerSecond: 1024 },
    { storage: "1.5Gi", writeBytesPerSecond: "0.5Mi" },
    { storage: "1G", writeBytesPerSecond: "100k" },
    { storage: "1048576000m" },
    {},
  ]) {
    const result = readSpec(parent({ quota }), config);
    assert.ok(result.valid, `${JSON.stringify(quota)}: ${result.valid ? "" : result.problems.join("; ")}`);
  }
});

test("every quantity rule of the schema has the grammar hooks/quantity.ts parses", () => {
  const formats: string[] = [];
  const walk = (node: unknown): void => {
    if (node === null || typeof node !== "object") return;
    for (const { rule } of ((node as Record<string, unknown>)["x-kubernetes-validations"] ?? []) as { rule: string }[]) {
      const format = /^string\(self\)\.matches\('([^']*)'\)/.exec(rule)?.[1];
      // a CEL string literal: a doubled backslash is one
      if (format !== undefined) formats.push(format.replaceAll("\\\\", "\\"));
    }
    for (const child of Object.values(node)) walk(child);
  };
  walk(etcdStorageSchema);
  // resources' requests and limits (cpu, memory), quota's storage and writeBytesPerSecond
  assert.equal(formats.length, 6);
  for (const format of formats) assert.equal(format, QUANTITY.source);
});
