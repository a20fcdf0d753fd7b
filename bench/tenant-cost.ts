// `npm run bench` (alone: `node bench/tenant-cost.ts`): what tenants cost as they grow. For 1, 10,
// 30 and 100 tenants on one fresh core etcd 3.6, each a gateway from its returned Deployment: core
// etcd's RSS and CPU, and the gateways' total, first idle, then with a light API-server load per
// tenant (a watch of its prefix, a write a second, a consistent list every 10 s); the marginal cost
// of one more idle and one more busy tenant; and, with 100 parents, the hook server's steady-state
// sync latency. Writes bench/RESULTS-tenant-cost.md and the curves as bench/tenant-cost.svg and .png.
// Environment: BENCH_TENANTS (default "1,10,30,100"), BENCH_TENANT_SECONDS (default 20) per phase.
import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Resvg } from "@resvg/resvg-js";
import type { HookRequest } from "../hooks/observed.ts";
import { freePort, httpGet, spawnManaged, startCoreEtcd, stopAll, tempDir, waitFor, type CoreEtcd } from "../test/e2e/harness.ts";
import { connectTenant, startTenant, type RunningTenant } from "../test/e2e/tenant.ts";
import type { EtcdClient, WatchStream } from "../test/support/etcd-client.ts";
import { prefixRangeEnd } from "../test/support/kubernetes-client.ts";
import { nextRequest, testConfig } from "../test/support/requests.ts";
import { ensureBuilt } from "../test/support/build.ts";

const COUNTS = (process.env.BENCH_TENANTS ?? "1,10,30,100").split(",").map(Number);
const SECONDS = Number(process.env.BENCH_TENANT_SECONDS ?? 20);
const TICKS = 100; // USER_HZ: /proc/<pid>/stat counts CPU in 1/100 s
const REPO_ROOT = fileURLToPath(new URL("../", import.meta.url));
const OUT = (name: string) => fileURLToPath(new URL(`./${name}`, import.meta.url));

/** RSS in MiB and CPU seconds so far of a process, from /proc. */
function usage(pid: number): { rssMiB: number; cpuSeconds: number } {
  const rss = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) / 1024;
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return { rssMiB: rss, cpuSeconds: (Number(fields[11]) + Number(fields[12])) / TICKS };
}

interface Phase {
  coreRssMiB: number;
  /** Share of one core. */
  coreCpu: number;
  gatewaysRssMiB: number;
  gatewaysCpu: number;
}

/** Average RSS at the end and CPU share over `seconds` of core etcd and of every gateway. */
async function measure(core: CoreEtcd, gateways: number[], seconds: number): Promise<Phase> {
  const before = { core: usage(core.pid()!), gateways: gateways.map(usage) };
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  const after = { core: usage(core.pid()!), gateways: gateways.map(usage) };
  const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);
  return {
    coreRssMiB: after.core.rssMiB,
    coreCpu: (after.core.cpuSeconds - before.core.cpuSeconds) / seconds,
    gatewaysRssMiB: sum(after.gateways.map((g) => g.rssMiB)),
    gatewaysCpu: sum(after.gateways.map((g, i) => g.cpuSeconds - before.gateways[i]!.cpuSeconds)) / seconds,
  };
}

/** What a quiet API server asks of its storage: one watch, a write a second, a consistent list every 10 s. */
function lightLoad(client: EtcdClient, until: () => boolean): { stop(): Promise<void> } {
  const watch: WatchStream = client.watch();
  watch.send({ create_request: { key: "/registry/", range_end: prefixRangeEnd("/registry/"), progress_notify: true } });
  watch.onResponse(() => undefined);
  const running = (async () => {
    for (let second = 0; !until(); second++) {
      await client.kv.put({ key: `/registry/configmaps/default/cm-${second % 50}`, value: `v${second}` });
      if (second % 10 === 0) await client.kv.range({ key: "/registry/", range_end: prefixRangeEnd("/registry/") });
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  })();
  return {
    stop: async () => {
      await running;
      watch.end();
    },
  };
}

/** The hook server, as its Deployment runs it (the image's CMD), and the steady-state sync of every parent posted to it in turn. */
async function syncLatencies(requests: HookRequest[], rounds: number): Promise<number[]> {
  ensureBuilt();
  const port = await freePort();
  const server = spawnManaged(process.execPath, ["dist/hooks/server.js"], { cwd: REPO_ROOT, env: { PATH: process.env.PATH ?? "", CORE_ETCD_ENDPOINTS: "https://127.0.0.1:2379", PORT: String(port), HOST: "127.0.0.1", LOG_LEVEL: "warn" } });
  await waitFor("hook server", async () => (await httpGet(`http://127.0.0.1:${port}/healthz`).catch(() => undefined))?.status === 200, 20_000, () => server.logs());
  const latencies: number[] = [];
  for (let round = 0; round < rounds; round++) {
    for (const request of requests) {
      const started = performance.now();
      const response = await fetch(`http://127.0.0.1:${port}/sync`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(request) });
      await response.arrayBuffer();
      if (response.status !== 200) throw new Error(`sync answered ${response.status}`);
      if (round > 0) latencies.push(performance.now() - started); // the first round warms the server's caches
    }
  }
  await server.stop();
  return latencies;
}

interface Point {
  tenants: number;
  idle: Phase;
  busy: Phase;
  startSeconds: number;
}

interface Series {
  name: string;
  color: string;
  value: (p: Point) => number;
}

/** One panel: lines of `series` against the tenant count, with its axes and legend below, at (left, top). */
function panel(points: Point[], title: string, series: Series[], left: number, top: number): string[] {
  const [width, height] = [440, 300];
  const margin = { left: 55, right: 15, top: 30, bottom: 40 };
  const maxX = Math.max(...points.map((p) => p.tenants));
  const maxY = Math.max(1, ...points.flatMap((p) => series.map((s) => s.value(p)))) * 1.1;
  const x = (v: number) => left + margin.left + (v / maxX) * (width - margin.left - margin.right);
  const y = (v: number) => top + height - margin.bottom - (v / maxY) * (height - margin.top - margin.bottom);
  const bottom = top + height - margin.bottom;
  return [
    `<text x="${left + margin.left}" y="${top + 18}" font-size="13">${title}</text>`,
    ...[0, 0.25, 0.5, 0.75, 1].map((f) => f * maxY).map((t) => `<line x1="${x(0)}" x2="${x(maxX)}" y1="${y(t)}" y2="${y(t)}" stroke="#ddd"/><text x="${x(0) - 6}" y="${y(t) + 4}" font-size="11" text-anchor="end">${t < 10 ? t.toFixed(1) : t.toFixed(0)}</text>`),
    ...points.map((p) => `<text x="${x(p.tenants)}" y="${bottom + 16}" font-size="11" text-anchor="middle">${p.tenants}</text>`),
    `<text x="${(x(0) + x(maxX)) / 2}" y="${bottom + 32}" font-size="12" text-anchor="middle">tenants</text>`,
    `<line x1="${x(0)}" x2="${x(0)}" y1="${top + margin.top}" y2="${bottom}" stroke="#333"/><line x1="${x(0)}" x2="${x(maxX)}" y1="${bottom}" y2="${bottom}" stroke="#333"/>`,
    ...series.map((s, i) => {
      const d = points.map((p, j) => `${j === 0 ? "M" : "L"}${x(p.tenants).toFixed(1)},${y(s.value(p)).toFixed(1)}`).join(" ");
      const dots = points.map((p) => `<circle cx="${x(p.tenants).toFixed(1)}" cy="${y(s.value(p)).toFixed(1)}" r="3" fill="${s.color}"/>`).join("");
      const legendY = top + height + 8 + i * 18;
      return `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"/>${dots}<rect x="${x(0)}" y="${legendY - 10}" width="12" height="12" fill="${s.color}"/><text x="${x(0) + 18}" y="${legendY}" font-size="12">${s.name}</text>`;
    }),
  ];
}

function plot(points: Point[]): string {
  const memory: Series[] = [
    { name: "gateways, busy", color: "#1f77b4", value: (p) => p.busy.gatewaysRssMiB },
    { name: "gateways, idle", color: "#aec7e8", value: (p) => p.idle.gatewaysRssMiB },
    { name: "core etcd, busy", color: "#d62728", value: (p) => p.busy.coreRssMiB },
    { name: "core etcd, idle", color: "#ff9896", value: (p) => p.idle.coreRssMiB },
  ];
  const cpu: Series[] = [
    { name: "gateways, busy", color: "#1f77b4", value: (p) => p.busy.gatewaysCpu * 100 },
    { name: "gateways, idle", color: "#aec7e8", value: (p) => p.idle.gatewaysCpu * 100 },
    { name: "core etcd, busy", color: "#d62728", value: (p) => p.busy.coreCpu * 100 },
    { name: "core etcd, idle", color: "#ff9896", value: (p) => p.idle.coreCpu * 100 },
  ];
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="900" height="420" font-family="DejaVu Sans, sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="20" y="22" font-size="15">What tenants cost (one core etcd 3.6; busy: a watch, a write a second, a list every 10 s per tenant)</text>`,
    ...panel(points, "Memory: RSS, MiB", memory, 0, 30),
    ...panel(points, "CPU: % of one core", cpu, 450, 30),
    `</svg>`,
  ].join("\n");
}

const points: Point[] = [];
let hookLatencies: number[] = [];
for (const count of COUNTS) {
  const dir = await tempDir(`bench-tenants-${count}-`);
  const core = await startCoreEtcd(path.join(dir, "core"));
  const config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
  const tenants: RunningTenant[] = [];
  const started = performance.now();
  for (let first = 0; first < count; first += 10) {
    tenants.push(...(await Promise.all(Array.from({ length: Math.min(10, count - first) }, (_, i) => {
      const name = `tenant-${first + i}`;
      return startTenant(config, core, name, { clientCertSecret: [{ name: "etcd-client", namespace: `${name}-system` }] }, path.join(dir, name));
    }))));
  }
  const startSeconds = (performance.now() - started) / 1000;
  process.stderr.write(`[bench] ${count} tenants up in ${startSeconds.toFixed(0)} s; idle for ${SECONDS} s\n`);
  const gateways = tenants.map((t) => t.proxy.gateway.process.pid!);
  await new Promise((resolve) => setTimeout(resolve, 5_000)); // settled after start
  const idle = await measure(core, gateways, SECONDS);
  process.stderr.write(`[bench] ${count} tenants busy for ${SECONDS} s\n`);
  const clients = await Promise.all(tenants.map((t) => connectTenant(t)));
  let stopping = false;
  const loads = clients.map((client) => lightLoad(client, () => stopping));
  await new Promise((resolve) => setTimeout(resolve, 3_000));
  const busy = await measure(core, gateways, SECONDS);
  stopping = true;
  await Promise.all(loads.map((l) => l.stop()));
  for (const client of clients) client.close();
  points.push({ tenants: count, idle, busy, startSeconds });
  if (count === Math.max(...COUNTS)) hookLatencies = await syncLatencies(tenants.map((t) => nextRequest(t.request, t.response)), 6);
  await stopAll();
}

const pct = (values: number[], p: number) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor((p / 100) * values.length))] ?? NaN;
const last = points.at(-1)!;
const previous = points.at(-2) ?? last;
const marginal = (phase: "idle" | "busy", field: keyof Phase) => (last[phase][field] - previous[phase][field]) / Math.max(1, last.tenants - previous.tenants);
const rows = points.map((p) =>
  `| ${p.tenants} | ${p.idle.coreRssMiB.toFixed(0)} / ${(p.idle.coreCpu * 100).toFixed(1)}% | ${p.idle.gatewaysRssMiB.toFixed(0)} / ${(p.idle.gatewaysCpu * 100).toFixed(1)}% | ${p.busy.coreRssMiB.toFixed(0)} / ${(p.busy.coreCpu * 100).toFixed(1)}% | ${p.busy.gatewaysRssMiB.toFixed(0)} / ${(p.busy.gatewaysCpu * 100).toFixed(1)}% | ${p.startSeconds.toFixed(0)} |`,
);
const report = [
  `Measured with \`npm run bench\` (bench/tenant-cost.ts): for each tenant count a fresh core etcd 3.6 (TLS) and one gateway per tenant from its returned Deployment; ${SECONDS} s idle, then ${SECONDS} s with a light API-server load per tenant (a watch of its prefix, a write a second, a consistent list every 10 s). RSS at the end of each phase in MiB; CPU as a share of one core over the phase.`,
  `Machine: ${os.cpus().length} × ${os.cpus()[0]?.model.split(" ").slice(0, 2).join(" ")}, Node ${process.version}; everything shares both CPUs. Curves: [tenant-cost.png](tenant-cost.png).`,
  "",
  "| tenants | core etcd idle RSS / CPU | gateways idle RSS / CPU | core etcd busy RSS / CPU | gateways busy RSS / CPU | start-up of all, s |",
  "| ---: | ---: | ---: | ---: | ---: | ---: |",
  ...rows,
  "",
  `One more tenant, from ${previous.tenants} to ${last.tenants}: idle, core etcd +${marginal("idle", "coreRssMiB").toFixed(2)} MiB and +${(marginal("idle", "coreCpu") * 100).toFixed(2)}% of a core, its gateway +${marginal("idle", "gatewaysRssMiB").toFixed(1)} MiB and +${(marginal("idle", "gatewaysCpu") * 100).toFixed(2)}%; busy, core etcd +${marginal("busy", "coreRssMiB").toFixed(2)} MiB and +${(marginal("busy", "coreCpu") * 100).toFixed(2)}%, its gateway +${marginal("busy", "gatewaysRssMiB").toFixed(1)} MiB and +${(marginal("busy", "gatewaysCpu") * 100).toFixed(2)}%.`,
  `The hook server's steady-state sync with ${last.tenants} parents (each parent's second sync, ${hookLatencies.length} calls): p50 ${pct(hookLatencies, 50).toFixed(1)} ms, p99 ${pct(hookLatencies, 99).toFixed(1)} ms.`,
  "",
].join("\n");
process.stdout.write(`${report}\n`);
await writeFile(OUT("RESULTS-tenant-cost.md"), report);
const svg = plot(points);
await writeFile(OUT("tenant-cost.svg"), svg);
await writeFile(OUT("tenant-cost.png"), new Resvg(svg, { font: { loadSystemFonts: true, defaultFontFamily: "DejaVu Sans" } }).render().asPng());
