// `npm run bench`: the steady-state sync (the hot path) against a bare Fastify echo of the same
// request (the floor for any JSON hook on this machine), first-sync latency (full PKI issuance),
// RSS across a long steady run, and how all of it grows with the destinations per tenant.
// Prints a table and writes the same figures to bench/RESULTS.md.
// Environment: BENCH_SECONDS (default 10) per measured run, BENCH_REQUESTS (default 100000) for the memory run.
import assert from "node:assert/strict";
import { fork, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import os from "node:os";
import autocannon from "autocannon";
import { planCertificates } from "../hooks/children/certificates.ts";
import { checkCoreCredentials } from "../hooks/core-credentials.ts";
import type { HookRequest } from "../hooks/observed.ts";
import { clearParseCaches } from "../hooks/pki/parse.ts";
import { parseHookRequest } from "../hooks/request.ts";
import { readSpec } from "../hooks/spec.ts";
import { sync } from "../hooks/sync.ts";
import { coreRelated, etcdStorage, makeCorePki, namespacesRelated, nextRequest, syncRequest, testConfig, type CorePki } from "../test/support/requests.ts";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const SCALE_SECONDS = Math.max(3, Math.round(SECONDS / 2));
const MEMORY_REQUESTS = Number(process.env.BENCH_REQUESTS ?? 100_000);
const CONNECTIONS = 16;
const FIRST_SYNC_TENANTS = 200;
const SCALES = [1, 10, 50];
const TARGETS = { ratio: 0.8, firstSyncMedianMs: 20, rssGrowthMiB: 20 };

const config = testConfig({ LOG_LEVEL: "silent" });

// ---- servers, each in its own process ----

interface Server {
  port: number;
  process: ChildProcess;
}

async function startServer(kind: "app" | "uncached" | "bare"): Promise<Server> {
  const child = fork(new URL("./server.ts", import.meta.url), [kind], { execArgv: ["--expose-gc"], stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const { port } = await nextMessage<{ port: number }>(child);
  return { port, process: child };
}

function nextMessage<T>(child: ChildProcess): Promise<T> {
  return new Promise((resolve, reject) => {
    child.once("message", (message) => resolve(message as T));
    child.once("exit", (code) => reject(new Error(`bench server exited (${code})`)));
  });
}

async function memory(server: Server): Promise<{ rss: number; heapUsed: number }> {
  server.process.send({ type: "memory" });
  return nextMessage(server.process);
}

// ---- requests ----

/** A tenant whose destinations each receive the serving-CA ConfigMap and a client-certificate Secret. */
function tenant(name: string, destinations: number, core: CorePki): HookRequest {
  const namespaces = Array.from({ length: destinations }, (_, i) => `team-${i + 1}`);
  const spec = {
    caCertConfigMap: namespaces.map((namespace) => ({ name: "etcd-serving-ca", namespace })),
    clientCertSecret: namespaces.map((namespace) => ({ name: "etcd-client-cert", namespace })),
  };
  return syncRequest(etcdStorage(name, spec), { ...coreRelated(config, core), ...namespacesRelated(namespaces) });
}

/** The request Metacontroller sends once everything exists: every child observed, nothing to issue. */
async function steadyBody(destinations: number, core: CorePki): Promise<string> {
  const first = tenant(`steady-${destinations}`, destinations, core);
  const answer = await sync(first, config, new Date());
  const steady = nextRequest(first, answer.response);
  const again = await sync(steady, config, new Date());
  assert.deepEqual(again.report.events, [], "the steady-state request issues nothing");
  assert.deepEqual(again.response.children, answer.response.children, "the steady-state answer is a fixed point");
  return JSON.stringify(steady);
}

// ---- load ----

interface Load {
  reqPerSec: number;
  p50: number;
  p99: number;
  requests: number;
}

async function load(server: Server, body: string, run: { seconds?: number; amount?: number }): Promise<Load> {
  const result = await autocannon({
    url: `http://127.0.0.1:${server.port}/sync`,
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
    connections: CONNECTIONS,
    ...(run.amount ? { amount: run.amount } : { duration: run.seconds ?? SECONDS }),
  });
  assert.equal(result.errors + result.timeouts + result.non2xx, 0, `every request answered 2xx (errors ${result.errors}, timeouts ${result.timeouts}, non-2xx ${result.non2xx})`);
  return { reqPerSec: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, requests: result.requests.total };
}

/** A short unmeasured run first: the JIT and the caches warm up as they would in a running server. */
async function measure(server: Server, body: string, seconds: number): Promise<Load> {
  await load(server, body, { seconds: 2 });
  return load(server, body, { seconds });
}

async function firstSyncMs(destinations: number, tenants: number, core: CorePki, label: string): Promise<{ median: number; p95: number }> {
  for (let i = 0; i < 5; i++) await sync(tenant(`warm-${label}-${i}`, destinations, core), config, new Date());
  const times: number[] = [];
  for (let i = 0; i < tenants; i++) {
    const request = tenant(`fresh-${label}-${i}`, destinations, core);
    const started = performance.now();
    await sync(request, config, new Date());
    times.push(performance.now() - started);
  }
  return { median: percentile(times, 0.5), p95: percentile(times, 0.95) };
}

/** Mean microseconds per call, in this process, after a warm-up. */
async function perCall(fn: () => unknown, calls = 3000): Promise<number> {
  for (let i = 0; i < calls / 4; i++) await fn();
  const started = performance.now();
  for (let i = 0; i < calls; i++) await fn();
  return ((performance.now() - started) / calls) * 1000;
}

/** Where a steady-state call's time goes, stage by stage (the profile, in numbers). */
async function breakdown(body: string): Promise<[string, number][]> {
  const request = JSON.parse(body) as HookRequest;
  const read = readSpec(request.parent, config);
  assert.ok(read.valid);
  const now = new Date();
  const answer = (await sync(request, config, now)).response;
  const echo = { children: Object.values(request.children).flatMap(Object.values) };
  return [
    ["JSON.parse of the request (both routes)", await perCall(() => JSON.parse(body))],
    ["hook request validation (parseHookRequest)", await perCall(() => parseHookRequest(request))],
    ["spec defaulting and validation, CEL rules included (readSpec)", await perCall(() => readSpec(request.parent, config))],
    ["core credentials check (checkCoreCredentials)", await perCall(() => checkCoreCredentials(request.related, config, now))],
    ["certificate plan (planCertificates)", await perCall(() => planCertificates(request.parent.metadata.name, read.spec, config, request.children, now))],
    ["**whole sync()**", await perCall(() => sync(request, config, now))],
    ["whole sync() with the parse caches emptied before each call (as before caching)", await perCall(() => (clearParseCaches(), sync(request, config, now)), 300)],
    ["JSON.stringify of the answer", await perCall(() => JSON.stringify(answer))],
    ["JSON.stringify of the bare route's echo", await perCall(() => JSON.stringify(echo))],
  ];
}

/** The cost of one more destination, from the smallest and largest runs: linear, as the tables show. */
function growth(small: Scaled, large: Scaled): string {
  const per = (a: number, b: number) => (a - b) / (large.destinations - small.destinations);
  const serverMicros = (load: Load) => 1e6 / load.reqPerSec;
  return (
    `Each destination adds about ${f(per(large.bodyKiB, small.bodyKiB))} KiB to the request, ` +
    `${f(per(serverMicros(large.steady), serverMicros(small.steady)), 0)} µs of server time to a steady-state /sync call ` +
    `(${f(per(serverMicros(large.floor), serverMicros(small.floor)), 0)} µs to the bare route, which only parses and serializes it), ` +
    `and ${f(per(large.first.median, small.first.median))} ms to a first sync (one client certificate issued).`
  );
}

interface Scaled {
  destinations: number;
  bodyKiB: number;
  steady: Load;
  floor: Load;
  first: { median: number; p95: number };
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

// ---- run ----

const mib = (bytes: number) => bytes / 2 ** 20;
const f = (value: number, digits = 1) => value.toFixed(digits);
const log = (line: string) => process.stderr.write(`${line}\n`);

const core = await makeCorePki();
const app = await startServer("app");
const bare = await startServer("bare");
const uncached = await startServer("uncached");
try {
  const body = await steadyBody(2, core);
  log(`steady-state request: 2 destinations, ${f(body.length / 1024)} KiB; ${SECONDS} s per run at ${CONNECTIONS} connections`);

  log("(a) /sync steady state ...");
  const steady = await measure(app, body, SECONDS);
  log("(b) bare Fastify echo ...");
  const floor = await measure(bare, body, SECONDS);
  log("(a') /sync steady state, answer cache off ...");
  const computed = await measure(uncached, body, SECONDS);

  log(`memory: ${MEMORY_REQUESTS} steady-state requests ...`);
  const before = await memory(app);
  const memoryRun = await load(app, body, { amount: MEMORY_REQUESTS });
  const after = await memory(app);

  log("breakdown of a steady-state call ...");
  const stages = await breakdown(body);

  log(`(c) first sync, ${FIRST_SYNC_TENANTS} fresh tenants ...`);
  const first = await firstSyncMs(2, FIRST_SYNC_TENANTS, core, "2");

  const scaling: Scaled[] = [];
  for (const destinations of SCALES) {
    log(`scaling: ${destinations} destination(s) ...`);
    const scaledBody = await steadyBody(destinations, core);
    const scaledSteady = await measure(app, scaledBody, SCALE_SECONDS);
    const scaledFloor = await measure(bare, scaledBody, SCALE_SECONDS);
    const scaledFirst = await firstSyncMs(destinations, Math.max(20, Math.round(FIRST_SYNC_TENANTS / destinations)), core, String(destinations));
    scaling.push({ destinations, bodyKiB: scaledBody.length / 1024, steady: scaledSteady, floor: scaledFloor, first: scaledFirst });
  }

  const ratio = steady.reqPerSec / floor.reqPerSec;
  const rssGrowth = mib(after.rss - before.rss);
  const met = (ok: boolean) => (ok ? "met" : "NOT met");
  const cpu = os.cpus()[0]?.model.trim() ?? "unknown CPU";
  const report = [
    `Measured with \`npm run bench\` (bench/bench.ts; \`BENCH_SECONDS=${SECONDS}\`), autocannon at ${CONNECTIONS} connections against the server on 127.0.0.1, each server in its own process, log level silent.`,
    `Machine: ${os.cpus().length} × ${cpu} (nproc ${os.availableParallelism()}), Node ${process.version}, ${os.platform()} ${os.release()}.`,
    "",
    `Steady state: a tenant with 2 destinations (${f(body.length / 1024)} KiB request, every child observed, every certificate valid, nothing to issue).`,
    "",
    "| | requests/s | p50 latency | p99 latency |",
    "| --- | ---: | ---: | ---: |",
    `| (a) \`POST /sync\`, steady state | ${f(steady.reqPerSec, 0)} | ${steady.p50} ms | ${steady.p99} ms |`,
    `| (b) bare Fastify route: parse the body, echo the children | ${f(floor.reqPerSec, 0)} | ${floor.p50} ms | ${floor.p99} ms |`,
    `| **(a)/(b)** | **${f(ratio, 2)}** | | |`,
    `| (a') \`POST /sync\`, steady state, answer cache off: every request parsed, validated and computed | ${f(computed.reqPerSec, 0)} | ${computed.p50} ms | ${computed.p99} ms |`,
    `| (a')/(b) | ${f(computed.reqPerSec / floor.reqPerSec, 2)} | | |`,
    "",
    `First sync (the whole PKI issued: 2 CAs, the serving certificate, 2 client certificates), direct \`sync()\` calls over ${FIRST_SYNC_TENANTS} fresh tenants: **median ${f(first.median)} ms, p95 ${f(first.p95)} ms**.`,
    "",
    `Memory across ${memoryRun.requests.toLocaleString("en")} steady-state requests (${f(memoryRun.reqPerSec, 0)} requests/s): RSS ${f(mib(before.rss))} MiB before, ${f(mib(after.rss))} MiB after (${rssGrowth >= 0 ? "+" : ""}${f(rssGrowth)} MiB); heap in use after a full GC ${f(mib(before.heapUsed))} MiB before, ${f(mib(after.heapUsed))} MiB after.`,
    "",
    "Where a steady-state call's time goes (the same request, stage by stage, in the bench process; µs per call):",
    "",
    "| stage | µs |",
    "| --- | ---: |",
    ...stages.map(([stage, micros]) => `| ${stage} | ${f(micros)} |`),
    "",
    `Cost by destinations per tenant (each destination receives the serving-CA ConfigMap and a client-certificate Secret; ${SCALE_SECONDS} s per run; first sync over ${scaling.map((s) => Math.max(20, Math.round(FIRST_SYNC_TENANTS / s.destinations))).join("/")} fresh tenants):`,
    "",
    "| destinations | request | steady /sync req/s | p50 | bare route req/s | (a)/(b) | first sync median |",
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...scaling.map(
      (s) =>
        `| ${s.destinations} | ${f(s.bodyKiB)} KiB | ${f(s.steady.reqPerSec, 0)} | ${s.steady.p50} ms | ${f(s.floor.reqPerSec, 0)} | ${f(s.steady.reqPerSec / s.floor.reqPerSec, 2)} | ${f(s.first.median)} ms |`,
    ),
    "",
    growth(scaling[0]!, scaling[scaling.length - 1]!),
    "",
    "Targets:",
    `- steady-state throughput ≥ ${TARGETS.ratio} of the bare route: ${f(ratio, 2)}, ${met(ratio >= TARGETS.ratio)}`,
    `- first sync median < ${TARGETS.firstSyncMedianMs} ms: ${f(first.median)} ms, ${met(first.median < TARGETS.firstSyncMedianMs)}`,
    `- RSS flat across ${memoryRun.requests.toLocaleString("en")} requests (growth < ${TARGETS.rssGrowthMiB} MiB): ${rssGrowth >= 0 ? "+" : ""}${f(rssGrowth)} MiB, ${met(rssGrowth < TARGETS.rssGrowthMiB)}`,
  ].join("\n");

  process.stdout.write(`\n${report}\n`);
  writeFileSync(new URL("./RESULTS.md", import.meta.url), `${report}\n`);
  log("\nwritten to bench/RESULTS.md");
} finally {
  app.process.disconnect();
  bare.process.disconnect();
  uncached.process.disconnect();
}
