// The proxy Deployment: the tenant's quota and its replica count reach the gateway's command line
// exactly, as the flags gateway/shell/config.ts reads.
import assert from "node:assert/strict";
import { test } from "node:test";
import { buildDeployment } from "../../hooks/children/deployment.ts";
import { readSpec } from "../../hooks/spec.ts";
import { testConfig } from "../support/requests.ts";

const QUOTA_FLAGS = /^--(quota-[a-z-]+|replicas)=/;

/** The gateway container's args for this spec, read as sync reads it. */
function args(spec: Record<string, unknown>, env: Record<string, string> = {}): string[] {
  const config = testConfig(env);
  const read = readSpec({ metadata: { name: "t" }, spec }, config);
  assert.ok(read.valid, read.valid ? "" : read.problems.join("; "));
  const deployment = buildDeployment("t", read.spec, config);
  const [container, ...others] = (deployment.spec as any).template.spec.containers;
  assert.equal(others.length, 0);
  assert.equal(container.name, "gateway");
  return container.args;
}

test("the default quota and replicas: the last four flags, in whole bytes and requests per second", () => {
  const all = args({});
  assert.deepEqual(all.slice(-4), ["--quota-storage-bytes=268435456", "--quota-write-bytes-per-second=262144", "--quota-requests-per-second=1000", "--replicas=2"]);
  assert.equal(all.filter((arg) => QUOTA_FLAGS.test(arg)).length, 4, "each flag once");
});

test("spec.quota as written, rounded down to whole bytes", () => {
  assert.deepEqual(args({ quota: { storage: "1.5Gi", writeBytesPerSecond: "2000.9", requestsPerSecond: 20 } }).slice(-4), [
    "--quota-storage-bytes=1610612736",
    "--quota-write-bytes-per-second=2000",
    "--quota-requests-per-second=20",
    "--replicas=2",
  ]);
  assert.deepEqual(args({ quota: { storage: 8 * 1024 ** 3 } }).slice(-4, -3), ["--quota-storage-bytes=8589934592"]);
});

test("a field left out takes the configured default", () => {
  const env = { DEFAULT_STORAGE_QUOTA: "1G", DEFAULT_WRITE_BYTES_PER_SECOND: "64Ki", DEFAULT_REQUESTS_PER_SECOND: "50" };
  assert.deepEqual(args({ quota: { requestsPerSecond: 5 } }, env).slice(-4), ["--quota-storage-bytes=1000000000", "--quota-write-bytes-per-second=65536", "--quota-requests-per-second=5", "--replicas=2"]);
});

test("--replicas follows spec.replicas, which the Deployment runs", () => {
  for (const replicas of [1, 3, 64]) {
    const config = testConfig();
    const read = readSpec({ metadata: { name: "t" }, spec: { replicas } }, config);
    assert.ok(read.valid);
    const deployment = buildDeployment("t", read.spec, config) as any;
    assert.equal(deployment.spec.replicas, replicas);
    assert.equal(deployment.spec.template.spec.containers[0].args.at(-1), `--replicas=${replicas}`);
  }
});

test("the young generation follows the memory limit: a sixteenth of it, from 1 to 16 MiB", () => {
  const command = (resources: unknown) => {
    const config = testConfig();
    const read = readSpec({ metadata: { name: "t" }, spec: resources === undefined ? {} : { resources } }, config);
    assert.ok(read.valid, read.valid ? "" : read.problems.join("; "));
    return (buildDeployment("t", read.spec, config) as any).spec.template.spec.containers[0].command;
  };
  assert.deepEqual(command(undefined), ["/usr/local/bin/node", "--v8-pool-size=1", "--max-semi-space-size=16", "--external-memory-accounted-in-global-limit", "--expose-gc", "dist/gateway/main.js"], "the default 256Mi limit");
  assert.equal(command({ limits: { memory: "128Mi" } })[2], "--max-semi-space-size=8");
  assert.equal(command({ limits: { memory: "100M" } })[2], "--max-semi-space-size=5");
  assert.equal(command({ limits: { memory: "8Mi" } })[2], "--max-semi-space-size=1");
  assert.equal(command({ limits: { memory: "4Gi" } })[2], "--max-semi-space-size=16");
  assert.equal(command({ requests: { memory: "64Mi" } })[2], "--max-semi-space-size=16", "no limit");
});
