// `npm run bench`, what one tenant's gateway costs before its first call (node bench/gateway-cost.ts
// runs it alone): the idle memory of a gateway started from the Deployment the sync hook returns
// (its exact command, in a memory cgroup of its container's limit, as in a pod), beside etcd's
// grpc-proxy on the same core etcd and Node running an empty script; and the gateway's start-up,
// from process start to ready (/readyz 200: serving, the tenant's usage counted), for an empty
// tenant and for a tenant of 10,000 keys.
// Prints a table and writes it to bench/RESULTS-gateway-cost.md.
// Each process is read after it was ready and idle a few seconds (once scraped, as Prometheus
// would), and one gateway and one grpc-proxy are read again after minutes of idling under the
// kubelet's probes: V8 compiles what runs often later, which adds Node's optimizing compiler to
// the pages a long-lived gateway holds.
// Environment: BENCH_COST_SAMPLES (default 5) gateways per case, BENCH_COST_IDLE_SECONDS (default 5)
// idle after ready before memory is read, BENCH_COST_LONG_IDLE_SECONDS (default 360),
// BENCH_COST_LINE (default 3.6) core etcd's line.
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseQuantity } from "../hooks/quantity.ts";
import { readSpec } from "../hooks/spec.ts";
import { sync } from "../hooks/sync.ts";
import { etcdRelease, freePort, httpGet, spawnManaged, startCoreEtcd, stopAll, tempDir, type CoreEtcd, type EtcdLine } from "../test/e2e/harness.ts";
import { find, relatedFor, startProxy } from "../test/e2e/tenant.ts";
import { connect } from "../test/support/etcd-client.ts";
import { etcdStorage, syncRequest, testConfig, unb64 } from "../test/support/requests.ts";
import { memoryCgroup } from "./cgroup.ts";

const SAMPLES = Number(process.env.BENCH_COST_SAMPLES ?? 5);
const IDLE_SECONDS = Number(process.env.BENCH_COST_IDLE_SECONDS ?? 5);
const LONG_IDLE_SECONDS = Number(process.env.BENCH_COST_LONG_IDLE_SECONDS ?? 360);
const LINE = (process.env.BENCH_COST_LINE ?? "3.6") as EtcdLine;
const LARGE_KEYS = 10_000;
const VALUE_BYTES = 1024;
// Issue 20: an idle gateway at most 64 MiB (goal 56); ready within 1 s for an empty tenant.
const IDLE_BAR_MIB = 64;
const IDLE_GOAL_MIB = 56;
const START_BAR_MS = 1000;

interface Memory {
  rss: number;
  anon: number;
  file: number;
}

const ticks = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim());
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / ticks;
}

function memoryOf(pid: number): Memory {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN) / 1024;
  return { rss: field("VmRSS"), anon: field("RssAnon"), file: field("RssFile") + field("RssShmem") };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const fixed = (value: number, digits = 1) => (Number.isFinite(value) ? value.toFixed(digits) : "—");
const range = (values: number[], digits = 1) => `${fixed(Math.min(...values), digits)}–${fixed(Math.max(...values), digits)}`;

/** Polls until `url` answers 200, every few milliseconds: the moment it first does, in performance.now() time. */
async function firstOk(url: string, what: string, logs: () => string): Promise<number> {
  const deadline = performance.now() + 60_000;
  for (;;) {
    const ok = (await httpGet(url, 2_000).catch(() => undefined))?.status === 200;
    const now = performance.now();
    if (ok) return now;
    if (now > deadline) throw new Error(`${what} not ready within 60 s:\n${logs().slice(-4000)}`);
    await sleep(5);
  }
}

/**
 * Keeps a ready process idle under the kubelet's probes (GET `probe` every 10 s) until
 * LONG_IDLE_SECONDS after now; the returned function waits for that, reads it, then stops it.
 */
function keepIdle(pid: number, probe: string, first: Sample, stop: () => Promise<void>): () => Promise<Sample> {
  const since = performance.now();
  const before = cpuSeconds(pid);
  const probes = setInterval(() => void httpGet(probe).catch(() => undefined), 10_000);
  return async () => {
    await sleep(Math.max(0, since + LONG_IDLE_SECONDS * 1000 - performance.now()));
    clearInterval(probes);
    const memory = memoryOf(pid);
    const idleCpu = ((cpuSeconds(pid) - before) / ((performance.now() - since) / 1000)) * 100;
    await stop();
    return { ...first, memory, idleCpu };
  };
}

interface Sample {
  startMs: number;
  memory: Memory;
  /** CPU while idle, in % of one core. */
  idleCpu: number;
}

/** Idles `seconds` after a process was ready, as under the kubelet's probes (GET `probe` every 10 s): the CPU it used meanwhile, in % of one core. */
async function idle(pid: number, seconds: number, probe: string): Promise<number> {
  const before = cpuSeconds(pid);
  const started = performance.now();
  const probes = setInterval(() => void httpGet(probe).catch(() => undefined), 10_000);
  try {
    await sleep(seconds * 1000);
  } finally {
    clearInterval(probes);
  }
  return ((cpuSeconds(pid) - before) / ((performance.now() - started) / 1000)) * 100;
}

/** One gateway of `name` from the returned Deployment: its start-up, then its memory once idle; stopped after. */
async function gatewaySample(core: CoreEtcd, dir: string, name: string, index: number, long?: (() => Promise<Sample>)[]): Promise<Sample> {
  const config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
  const spec = { clientCertSecret: [{ name: "etcd-client", namespace: "bench-system" }] };
  const request = syncRequest(etcdStorage(name, spec), relatedFor(config, core));
  const { response } = await sync(request, config, new Date());
  const read = readSpec(etcdStorage(name, spec), config);
  if (!read.valid) throw new Error(read.problems.join("; "));
  const limit = read.spec.resources.limits?.memory;
  const sampleDir = path.join(dir, `${name}-${index}`);
  const cgroup = limit === undefined ? undefined : memoryCgroup(dir, Number(parseQuantity(limit)!.floor()), `${name}-${index}`);
  const proxy = await startProxy(config, request, response, sampleDir, { waitReady: false, ...(cgroup ? { nodeBinary: cgroup.wrapper } : {}) });
  // The container's process was spawned as startProxy returned.
  const started = performance.now();
  const ready = await firstOk(`http://127.0.0.1:${proxy.healthPort}/readyz`, `gateway of ${name}`, () => proxy.gateway.logs());
  const pid = proxy.gateway.process.pid!;
  // Scraped once, as Prometheus would.
  if ((await httpGet(`http://127.0.0.1:${proxy.healthPort}/metrics`)).status !== 200) throw new Error("/metrics failed");
  const idleCpu = await idle(pid, IDLE_SECONDS, `http://127.0.0.1:${proxy.healthPort}/readyz`);
  const memory = memoryOf(pid);
  const sample = { startMs: ready - started, memory, idleCpu };
  if (!long) {
    await proxy.gateway.stop();
    cgroup?.remove();
  } else {
    long.push(keepIdle(pid, `http://127.0.0.1:${proxy.healthPort}/readyz`, sample, async () => {
      await proxy.gateway.stop();
      cgroup?.remove();
    }));
  }
  confined ||= cgroup !== undefined;
  return sample;
}
let confined = false;

/** etcd's grpc-proxy with --namespace, serving the tenant's certificates, on the same core: its start-up and idle memory. */
async function grpcProxySample(core: CoreEtcd, dir: string, index: number, long?: (() => Promise<Sample>)[]): Promise<Sample> {
  const config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
  const name = "grpc-proxy";
  const request = syncRequest(etcdStorage(name, { clientCertSecret: [{ name: "etcd-client", namespace: "bench-system" }] }), relatedFor(config, core));
  const { response } = await sync(request, config, new Date());
  const secret = find(response, "Secret", config.proxyNamespace, `etcd-${name}-server-tls`).data as Record<string, string>;
  const trusted = find(response, "ConfigMap", config.proxyNamespace, `etcd-${name}-trusted-ca`).data as Record<string, string>;
  const files = { cert: path.join(dir, `proxy-${index}.crt`), key: path.join(dir, `proxy-${index}.key`), ca: path.join(dir, `proxy-ca-${index}.crt`) };
  await writeFile(files.cert, unb64(secret["tls.crt"]));
  await writeFile(files.key, unb64(secret["tls.key"]));
  await writeFile(files.ca, trusted["ca.crt"]!);
  const [port, metricsPort] = [await freePort(), await freePort()];
  const managed = spawnManaged(etcdRelease(LINE).etcd, [
    "grpc-proxy", "start",
    `--endpoints=${core.endpoint}`, `--cacert=${core.caFile}`, `--cert=${core.certFile}`, `--key=${core.keyFile}`,
    `--namespace=/etcdstorage/${name}/`,
    // No advertised URL: grpc-proxy dials it at start with its serving certificate, which the tenant's client CA refuses (bench/data-path.ts).
    `--listen-addr=127.0.0.1:${port}`, "--advertise-client-url=",
    `--cert-file=${files.cert}`, `--key-file=${files.key}`, `--trusted-ca-file=${files.ca}`,
    `--metrics-addr=http://127.0.0.1:${metricsPort}`, `--data-dir=${path.join(dir, `grpc-proxy-${index}`)}`,
  ], { cwd: os.tmpdir(), env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } });
  const started = performance.now();
  const ready = await firstOk(`http://127.0.0.1:${metricsPort}/health`, "grpc-proxy", () => managed.logs());
  const pid = managed.process.pid!;
  if ((await httpGet(`http://127.0.0.1:${metricsPort}/metrics`)).status !== 200) throw new Error("grpc-proxy /metrics failed");
  const idleCpu = await idle(pid, IDLE_SECONDS, `http://127.0.0.1:${metricsPort}/health`);
  const sample = { startMs: ready - started, memory: memoryOf(pid), idleCpu };
  if (!long) await managed.stop();
  else long.push(keepIdle(pid, `http://127.0.0.1:${metricsPort}/health`, sample, () => managed.stop()));
  return sample;
}

/** Node running a script that does nothing (it stays alive): the floor under any Node process. */
async function emptyNodeSample(): Promise<Sample> {
  const managed = spawnManaged(process.execPath, ["-e", "setInterval(() => {}, 60_000)"], { cwd: os.tmpdir(), env: {} });
  await sleep(1000);
  const before = cpuSeconds(managed.process.pid!);
  await sleep(IDLE_SECONDS * 1000);
  const idleCpu = ((cpuSeconds(managed.process.pid!) - before) / IDLE_SECONDS) * 100;
  const memory = memoryOf(managed.process.pid!);
  await managed.stop();
  return { startMs: NaN, memory, idleCpu };
}

/** 10,000 keys of 1 KiB under the tenant's prefix, written straight to core etcd. */
async function seed(core: CoreEtcd, prefix: string): Promise<void> {
  const client = connect(core.endpoint, { ca: core.tls.ca, cert: core.tls.cert, key: core.tls.key });
  const value = Buffer.alloc(VALUE_BYTES, "v");
  const BATCH = 100; // etcd's --max-txn-ops is 128
  try {
    for (let first = 0; first < LARGE_KEYS; first += BATCH * 8) {
      await Promise.all(Array.from({ length: 8 }, (_, lane) => {
        const start = first + lane * BATCH;
        const count = Math.min(BATCH, LARGE_KEYS - start);
        if (count <= 0) return undefined;
        return client.kv.txn({ success: Array.from({ length: count }, (_, i) => ({ request_put: { key: `${prefix}registry/objects/${String(start + i).padStart(6, "0")}`, value } })) });
      }));
    }
  } finally {
    client.close();
  }
}

async function main(): Promise<void> {
  const loadBefore = os.loadavg()[0]!;
  const dir = await tempDir("bench-gateway-cost-");
  const core = await startCoreEtcd(dir, { line: LINE });
  await seed(core, "/etcdstorage/large/");
  const samples: Record<string, Sample[]> = { node: [], empty: [], large: [], proxy: [] };
  // One gateway and one grpc-proxy stay up, idle, while the others are measured, and are read last.
  const long: (() => Promise<Sample>)[] = [];
  await gatewaySample(core, dir, "long", 0, long);
  await grpcProxySample(core, dir, 1000, long);
  // Interleaved, so that a drift of the machine's speed touches every case alike.
  for (let index = 0; index < SAMPLES; index++) {
    samples.node!.push(await emptyNodeSample());
    samples.empty!.push(await gatewaySample(core, dir, "empty", index));
    samples.large!.push(await gatewaySample(core, dir, "large", index));
    samples.proxy!.push(await grpcProxySample(core, dir, index));
    process.stderr.write(`sample ${index + 1}/${SAMPLES}: gateway ${fixed(samples.empty!.at(-1)!.memory.rss)} MiB, ready in ${fixed(samples.empty!.at(-1)!.startMs, 0)} ms (10,000 keys: ${fixed(samples.large!.at(-1)!.startMs, 0)} ms); grpc-proxy ${fixed(samples.proxy!.at(-1)!.memory.rss)} MiB\n`);
  }
  process.stderr.write(`waiting for the long-idle gateway and grpc-proxy (${LONG_IDLE_SECONDS} s)\n`);
  const [longGateway, longProxy] = await Promise.all(long.map((read) => read()));
  const config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
  const read = readSpec(etcdStorage("empty", {}), config);
  const resources = read.valid ? read.spec.resources : {};
  const command = find((await sync(syncRequest(etcdStorage("empty", { clientCertSecret: [{ name: "c", namespace: "bench-system" }] }), relatedFor(config, core)), config, new Date())).response, "Deployment", config.proxyNamespace, "etcd-empty");
  const container = (command.spec as { template: { spec: { containers: { command: string[] }[] } } }).template.spec.containers[0]!;
  // Idle CPU over minutes only: the kernel counts it in ticks of 10 ms, too coarse for seconds.
  const row = (what: string, list: Sample[], start: boolean, long = false) =>
    `| ${what} | ${fixed(median(list.map((s) => s.memory.rss)))}${list.length > 1 ? ` (${range(list.map((s) => s.memory.rss))})` : ""} | ${fixed(median(list.map((s) => s.memory.anon)))} | ${fixed(median(list.map((s) => s.memory.file)))} | ${long ? fixed(median(list.map((s) => s.idleCpu)), 2) : ""} | ${start ? `${fixed(median(list.map((s) => s.startMs)), 0)} (${range(list.map((s) => s.startMs), 0)})` : ""} |`;
  const idleRss = median(samples.empty!.map((s) => s.memory.rss));
  const startEmpty = median(samples.empty!.map((s) => s.startMs));
  const lines = [
    `Measured with \`npm run bench\` (bench/gateway-cost.ts): ${SAMPLES} processes per row, one after another and interleaved, each read ${IDLE_SECONDS} s after it was ready; medians, the range in brackets.`,
    `Machine: ${os.cpus().length} × ${os.cpus()[0]?.model.trim()}, Node ${process.version}, core ${execFileSync(etcdRelease(LINE).etcd, ["--version"]).toString().split("\n")[0]}. Load average (1 min) ${fixed(loadBefore, 2)} at the start, ${fixed(os.loadavg()[0]!, 2)} at the end: other work on this machine slows start-up, not memory.`,
    `The gateway runs the returned Deployment's command (\`${container.command.join(" ")}\`) with its args${confined ? `, in a memory cgroup of the container's limit (${resources.limits?.memory}), as in a pod` : ", unconfined (no memory cgroup could be made here)"}. Ready: from process start to the first /readyz 200 (serving, the tenant's usage counted, a linearizable read through to core etcd), polled every 5 ms; grpc-proxy's: to its /health 200. Then each is scraped once (/metrics) and idles under a readiness probe every 10 s; idle CPU is over the minutes of the last two rows. File-backed pages are the executable's (Node's or etcd's), which every process of the same image on a node shares through the page cache; anonymous memory is each process's own.`,
    "",
    "| process | RSS MiB | anonymous MiB | file-backed MiB | idle CPU, % of a core | ready in ms |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
    row("Node, an empty script", samples.node!, false),
    row("tenant gateway, empty tenant", samples.empty!, true),
    row(`tenant gateway, ${LARGE_KEYS.toLocaleString("en")} keys of ${VALUE_BYTES / 1024} KiB`, samples.large!, true),
    row("etcd grpc-proxy --namespace (same core)", samples.proxy!, true),
    row(`tenant gateway, empty tenant, after ${LONG_IDLE_SECONDS / 60} min idle`, [longGateway!], false, true),
    row(`etcd grpc-proxy, after ${LONG_IDLE_SECONDS / 60} min idle`, [longProxy!], false, true),
    "",
    `Bars (issue 20): idle gateway ${fixed(idleRss)} MiB (≤ ${IDLE_BAR_MIB}: ${idleRss <= IDLE_BAR_MIB ? "met" : "NOT met"}; goal ${IDLE_GOAL_MIB}: ${idleRss <= IDLE_GOAL_MIB ? "met" : "not met"}), ${fixed(longGateway!.memory.rss)} MiB after ${LONG_IDLE_SECONDS / 60} min (≤ ${IDLE_BAR_MIB}: ${longGateway!.memory.rss <= IDLE_BAR_MIB ? "met" : "NOT met"}; idle CPU ${fixed((longGateway!.idleCpu / 100) * 60, 3)} CPU seconds a minute), ready in ${fixed(startEmpty, 0)} ms for an empty tenant (< ${START_BAR_MS}: ${startEmpty < START_BAR_MS ? "met" : "NOT met"}). The proxy container's memory request: ${resources.requests?.memory ?? "none"}.`,
  ];
  const text = lines.join("\n");
  process.stdout.write(`\n${text}\n`);
  writeFileSync(new URL("./RESULTS-gateway-cost.md", import.meta.url), `${text}\n`);
  await stopAll();
}

await main();
