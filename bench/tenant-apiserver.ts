// `npm run bench`, a tenant kube-apiserver: the same real kube-apiserver (Kubernetes v1.37.2, from
// the pinned parts) and the same client load, once directly on core etcd (under a prefix of its
// own, --etcd-prefix) and once through a tenant gateway started from the Deployment the sync hook
// returns. Both API servers run at once on one core etcd 3.6; rounds alternate between them.
// Per round and target, in a fresh namespace: CREATES ConfigMaps of 1 KiB with CONCURRENCY in
// flight (create latency and throughput; watch delivery, from sending a create to its event on a
// watch of the namespace opened before), then as many gets, then LISTS consistent lists of the
// namespace (no resourceVersion: served from the watch cache once a progress request confirms it).
// Prints a table and writes it to bench/RESULTS-tenant-apiserver.md.
// Environment: BENCH_KAS_ROUNDS (default 3), BENCH_KAS_CREATES (default 1000).
import { writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startCoreEtcd, stopAll, tempDir } from "../test/e2e/harness.ts";
import { startKubeApiserver, type KubeApi, type RunningKubeApiserver } from "../test/e2e/kube.ts";
import { startTenant } from "../test/e2e/tenant.ts";
import { testConfig } from "../test/support/requests.ts";

const ROUNDS = Number(process.env.BENCH_KAS_ROUNDS ?? 3);
const CREATES = Number(process.env.BENCH_KAS_CREATES ?? 1000);
const CONCURRENCY = 16;
const LISTS = 200;
// Issue 19: consistent list p99 through the gateway at most 1.5x direct; the goal 1.1x.
const LIST_P99_BAR = 1.5;
const LIST_P99_GOAL = 1.1;
const RESULTS = fileURLToPath(new URL("./RESULTS-tenant-apiserver.md", import.meta.url));
const OPS = ["create", "get", "consistent list", "watch delivery"] as const;
type Op = (typeof OPS)[number];

interface Measured {
  latencies: Record<Op, number[]>;
  /** Creates per second, per round. */
  createRates: number[];
}

const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
};
const median = (values: number[]) => percentile(values, 50);

async function pool(count: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < count) await task(next++);
  }));
}

async function round(api: KubeApi, namespace: string, into: Measured): Promise<void> {
  await api.call("POST", "/api/v1/namespaces", { apiVersion: "v1", kind: "Namespace", metadata: { name: namespace } });
  const base = `/api/v1/namespaces/${namespace}/configmaps`;
  const sent = new Map<string, number>();
  const delivered = new Map<string, number>();
  const list = await api.call<{ metadata: { resourceVersion: string } }>("GET", base);
  const watch = api.watch(`${base}?watch=1&resourceVersion=${list.metadata.resourceVersion}`);
  const watching = (async () => {
    while (delivered.size < CREATES) {
      const event = await watch.next(60_000);
      if (event.type === "ADDED") delivered.set(event.object.metadata.name, performance.now());
    }
  })();
  const value = "x".repeat(1024);
  const started = performance.now();
  await pool(CREATES, CONCURRENCY, async (i) => {
    const name = `cm-${i}`;
    const begin = performance.now();
    sent.set(name, begin);
    await api.call("POST", base, { apiVersion: "v1", kind: "ConfigMap", metadata: { name }, data: { value } });
    into.latencies.create.push(performance.now() - begin);
  });
  into.createRates.push(CREATES / ((performance.now() - started) / 1000));
  await watching;
  watch.close();
  for (const [name, at] of delivered) into.latencies["watch delivery"].push(at - sent.get(name)!);
  await pool(CREATES, CONCURRENCY, async (i) => {
    const begin = performance.now();
    await api.call("GET", `${base}/cm-${i}`);
    into.latencies.get.push(performance.now() - begin);
  });
  for (let i = 0; i < LISTS; i++) {
    const begin = performance.now();
    await api.call("GET", base);
    into.latencies["consistent list"].push(performance.now() - begin);
  }
}

const dir = await tempDir("bench-kas-");
try {
  const core = await startCoreEtcd(path.join(dir, "core"));
  const config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
  const quota = { storage: "2Gi", writeBytesPerSecond: "16Mi", requestsPerSecond: 100000 };
  const tenant = await startTenant(config, core, "kas", { clientCertSecret: [{ name: "etcd-client", namespace: "kas-system" }], quota }, path.join(dir, "tenant"));
  const targets: Array<{ name: string; kube: RunningKubeApiserver; measured: Measured }> = [];
  const fresh = (): Measured => ({ latencies: { create: [], get: [], "consistent list": [], "watch delivery": [] }, createRates: [] });
  targets.push({ name: "direct on core etcd", kube: await startKubeApiserver(path.join(dir, "direct"), { servers: core.endpoint, caFile: core.caFile, certFile: core.certFile, keyFile: core.keyFile }, ["--etcd-prefix=/direct-registry", "--etcd-compaction-interval=0"]), measured: fresh() });
  targets.push({ name: "through the gateway", kube: await startKubeApiserver(path.join(dir, "gateway"), { servers: tenant.endpoint, caFile: tenant.credentials.cacert, certFile: tenant.credentials.cert, keyFile: tenant.credentials.key }, ["--etcd-compaction-interval=0"]), measured: fresh() });
  for (let r = 0; r < ROUNDS; r++) {
    for (const target of r % 2 === 0 ? targets : [...targets].reverse()) {
      process.stderr.write(`[bench] round ${r + 1}/${ROUNDS}: ${target.name}\n`);
      await round(target.kube.api, `bench-${r}`, target.measured);
    }
  }
  const [direct, gateway] = targets as [(typeof targets)[0], (typeof targets)[0]];
  const rows = OPS.map((op) => {
    const d = direct.measured.latencies[op];
    const g = gateway.measured.latencies[op];
    return `| ${op} | ${median(d).toFixed(1)} / ${percentile(d, 99).toFixed(1)} | ${median(g).toFixed(1)} / ${percentile(g, 99).toFixed(1)} | ${(median(g) / median(d)).toFixed(2)} / ${(percentile(g, 99) / percentile(d, 99)).toFixed(2)} |`;
  });
  const rate = (m: Measured) => median(m.createRates);
  const listRatio = percentile(gateway.measured.latencies["consistent list"], 99) / percentile(direct.measured.latencies["consistent list"], 99);
  const report = [
    `Measured with \`npm run bench\` (bench/tenant-apiserver.ts): kube-apiserver v1.37.2 twice on one core etcd ${core.release.version} (TLS), one directly (\`--etcd-prefix=/direct-registry\`), one through a tenant gateway from the returned Deployment; ${ROUNDS} rounds alternating, each in a fresh namespace: ${CREATES} creates of 1 KiB ConfigMaps with ${CONCURRENCY} in flight, as many gets, ${LISTS} consistent lists of the namespace.`,
    `Machine: ${os.cpus().length} × ${os.cpus()[0]?.model.split(" ").slice(0, 2).join(" ")}, Node ${process.version}; everything shares both CPUs.`,
    "",
    "| request | direct p50 / p99 ms | through the gateway p50 / p99 ms | ratio p50 / p99 |",
    "| --- | ---: | ---: | ---: |",
    ...rows,
    `| create throughput (req/s) | ${rate(direct.measured).toFixed(0)} | ${rate(gateway.measured).toFixed(0)} | ${(rate(gateway.measured) / rate(direct.measured)).toFixed(2)} |`,
    "",
    `Consistent list p99 through the gateway: ${listRatio.toFixed(2)}× direct (the bar, at most ${LIST_P99_BAR}×: ${listRatio <= LIST_P99_BAR ? "met" : "NOT met"}; the goal, at most ${LIST_P99_GOAL}×: ${listRatio <= LIST_P99_GOAL ? "met" : "not met"}).`,
    "",
  ].join("\n");
  process.stdout.write(`${report}\n`);
  await writeFile(RESULTS, report);
} finally {
  await stopAll();
}
