// `npm run bench`, data path: the same kube-apiserver-shaped load, 32 calls in flight on one
// connection, against core etcd directly (the limit), etcd's grpc-proxy alone (the seed design's
// path, minus nginx) and the tenant gateway started from the Deployment the sync hook returns.
// Loads: create (the compare-and-swap Txn kube-apiserver's create sends, 1 KiB values), get of one
// key, list pages of 100. Each (load, target) runs ROUNDS times, interleaved; the median counts.
// Prints a table and writes it to bench/RESULTS-data-path.md.
// Environment: BENCH_DATA_SECONDS (default 5) per run, BENCH_DATA_ROUNDS (default 3).
import { execFileSync, spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ETCD, freePort, httpGet, startCoreEtcd, stopAll, tempDir, waitFor } from "../test/e2e/harness.ts";
import { find, startTenant } from "../test/e2e/tenant.ts";
import { testConfig, unb64 } from "../test/support/requests.ts";

const SECONDS = Number(process.env.BENCH_DATA_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_DATA_ROUNDS ?? 3);
const SEEDED = 2000;
const KINDS = ["create", "get", "list"] as const;
// Issue 10: at least what nginx + grpc-proxy measured here (0.63 / 0.54 / 0.87 of core), at least
// 0.55 / 0.5 / 0.8, aiming at 0.8 for all three.
const FLOOR = { create: 0.55, get: 0.5, list: 0.8 } as const;
const LOAD = fileURLToPath(new URL("./etcd-load.ts", import.meta.url));

interface Target {
  name: string;
  endpoint: string;
  ca: string;
  cert: string;
  key: string;
  keyBase: string;
  pid?: number;
}

interface Result {
  ops: number;
  p50: number;
  p99: number;
  failures: number;
  firstFailure: string;
  cpuSeconds?: number;
}

const ticks = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim());
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / ticks;
}
function memoryMiB(pid: number, field: "VmRSS" | "VmHWM"): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(match?.[1] ?? NaN) / 1024;
}

function runLoad(target: Target, kind: "seed" | (typeof KINDS)[number], worker: string): Promise<Result> {
  const options = { endpoint: target.endpoint, ca: target.ca, cert: target.cert, key: target.key, kind, keyBase: target.keyBase, seconds: SECONDS, worker, existing: SEEDED };
  return new Promise((resolve, reject) => {
    const before = target.pid ? cpuSeconds(target.pid) : 0;
    const child = spawn(process.execPath, [LOAD, JSON.stringify(options)], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk));
    child.on("close", (code) => {
      if (code !== 0) return reject(new Error(`load generator exited ${code}`));
      const result = JSON.parse(out) as Result;
      if (target.pid) result.cpuSeconds = cpuSeconds(target.pid) - before;
      resolve(result);
    });
  });
}

async function startGrpcProxy(dir: string, core: Awaited<ReturnType<typeof startCoreEtcd>>, serving: { cert: string; key: string; trustedCa: string }): Promise<{ endpoint: string; pid: number }> {
  const [port, metricsPort] = [await freePort(), await freePort()];
  const child = spawn(ETCD, [
    "grpc-proxy", "start",
    `--endpoints=${core.endpoint}`, `--cacert=${core.caFile}`, `--cert=${core.certFile}`, `--key=${core.keyFile}`,
    "--namespace=/etcdstorage/bench-proxy/",
    `--listen-addr=127.0.0.1:${port}`, `--advertise-client-url=https://127.0.0.1:${port}`,
    `--cert-file=${serving.cert}`, `--key-file=${serving.key}`, `--trusted-ca-file=${serving.trustedCa}`,
    `--metrics-addr=http://127.0.0.1:${metricsPort}`, `--data-dir=${path.join(dir, "grpc-proxy")}`,
  ], { stdio: "ignore" });
  process.on("exit", () => child.kill("SIGKILL"));
  await waitFor("grpc-proxy ready", async () => (await httpGet(`http://127.0.0.1:${metricsPort}/health`).catch(() => undefined))?.status === 200);
  return { endpoint: `https://127.0.0.1:${port}`, pid: child.pid! };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const fixed = (value: number, digits = 0) => (Number.isFinite(value) ? value.toFixed(digits) : "—");

async function main(): Promise<void> {
  const dir = await tempDir("bench-data-path-");
  const core = await startCoreEtcd(dir);
  const config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint, LOG_LEVEL: "silent" });
  // One replica with the largest quota the schema allows: this measures the data path, not the limits.
  const spec = { clientCertSecret: [{ name: "etcd-client", namespace: "bench-system" }], replicas: 1, quota: { storage: "8Gi", writeBytesPerSecond: "16Mi", requestsPerSecond: 100000 } };
  const tenant = await startTenant(config, core, "bench", spec, path.join(dir, "gateway"));
  // grpc-proxy serves the same tenant certificates as the gateway, from files written from the answer.
  const secret = find(tenant.response, "Secret", config.proxyNamespace, "etcd-bench-server-tls").data as Record<string, string>;
  const trusted = find(tenant.response, "ConfigMap", config.proxyNamespace, "etcd-bench-trusted-ca").data as Record<string, string>;
  const serving = { cert: path.join(dir, "proxy-tls.crt"), key: path.join(dir, "proxy-tls.key"), trustedCa: path.join(dir, "proxy-ca.crt") };
  await writeFile(serving.cert, unb64(secret["tls.crt"]));
  await writeFile(serving.key, unb64(secret["tls.key"]));
  await writeFile(serving.trustedCa, trusted["ca.crt"]!);
  const proxy = await startGrpcProxy(dir, core, serving);
  const { cacert, cert, key } = tenant.credentials;
  const targets: Target[] = [
    { name: "core etcd, direct", endpoint: core.endpoint, ca: core.caFile, cert: core.certFile, key: core.keyFile, keyBase: "/etcdstorage/bench-direct" },
    { name: "etcd grpc-proxy", endpoint: proxy.endpoint, ca: cacert, cert, key, keyBase: "", pid: proxy.pid },
    { name: "tenant gateway", endpoint: tenant.endpoint, ca: cacert, cert, key, keyBase: "", pid: tenant.proxy.gateway.process.pid! },
  ];
  for (const target of targets) {
    const seeded = await runLoad(target, "seed", "seed");
    if (seeded.failures > 0) throw new Error(`seeding ${target.name} failed: ${seeded.firstFailure}`);
  }
  const results = new Map<string, Result[]>();
  for (const kind of KINDS) {
    for (let round = 0; round < ROUNDS; round++) {
      for (const target of targets) {
        const result = await runLoad(target, kind, `r${round}`);
        if (result.failures > 0) throw new Error(`${kind} through ${target.name}: ${result.failures} calls failed (${result.firstFailure})`);
        results.set(`${kind} ${target.name}`, [...(results.get(`${kind} ${target.name}`) ?? []), result]);
        process.stderr.write(`${kind.padEnd(6)} ${target.name.padEnd(18)} ${fixed(result.ops)} ops/s\n`);
      }
    }
  }
  const gatewayPid = targets[2]!.pid!;
  const lines = [
    `Measured with \`npm run bench\` (bench/data-path.ts, bench/etcd-load.ts): ${SECONDS} s per run, ${ROUNDS} rounds interleaved, the median shown; 32 calls in flight on one HTTP/2 connection with mTLS; ${SEEDED} objects of 1 KiB seeded per target.`,
    `Machine: ${os.cpus().length} × ${os.cpus()[0]?.model.trim()}, Node ${process.version}, ${execFileSync(ETCD, ["--version"]).toString().split("\n")[0]}. Load generator, target and core etcd share the machine.`,
    "",
    "| load | target | ops/s | p50 ms | p99 ms | of core | target's CPU |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
  ];
  const ratios: Record<string, number> = {};
  for (const kind of KINDS) {
    const coreOps = median(results.get(`${kind} ${targets[0]!.name}`)!.map((r) => r.ops));
    for (const target of targets) {
      const runs = results.get(`${kind} ${target.name}`)!;
      const ops = median(runs.map((r) => r.ops));
      const cpu = target.pid ? `${fixed((median(runs.map((r) => r.cpuSeconds!)) / SECONDS) * 100)}%` : "";
      if (target === targets[2]) ratios[kind] = ops / coreOps;
      lines.push(`| ${kind} | ${target.name} | ${fixed(ops)} | ${fixed(median(runs.map((r) => r.p50)), 2)} | ${fixed(median(runs.map((r) => r.p99)), 2)} | ${fixed(ops / coreOps, 2)} | ${cpu} |`);
    }
  }
  lines.push(
    "",
    `Gateway memory: RSS ${fixed(memoryMiB(gatewayPid, "VmRSS"), 1)} MiB after the runs, peak ${fixed(memoryMiB(gatewayPid, "VmHWM"), 1)} MiB. CPU is the share of one core the target process used while its load ran.`,
    "",
    "Floors (issue 10): " + KINDS.map((kind) => `${kind} ${fixed(ratios[kind]!, 2)} of core (≥ ${FLOOR[kind]}: ${ratios[kind]! >= FLOOR[kind] ? "met" : "NOT met"})`).join(", ") + ".",
  );
  const text = lines.join("\n");
  process.stdout.write(`\n${text}\n`);
  writeFileSync(new URL("./RESULTS-data-path.md", import.meta.url), `${text}\n`);
  await stopAll();
}

await main();
