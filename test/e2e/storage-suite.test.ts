// Issue 19: Kubernetes' own storage conformance suite (k8s.io/apiserver/pkg/storage/testing) on
// the etcd3 store and on the watch cache in front of it, built as upstream's tests build them
// (test/kubernetes/storage/), directly on core etcd and through a tenant gateway started from the
// Deployment the sync hook returns. The Go test binary is a part, built ahead by
// test/support/parts.ts: nothing is compiled here. The etcd3 store's suite runs on etcd 3.6, the
// watch cache's on every line (harness.ts's ETCD_LINES).
//
// Each path has a core etcd of its own, so the direct and gateway halves run at once, as processes
// of the binary, each suite in two shards (its watch tests, the rest) on core etcds of their own.
// The few suite tests that need an etcd never written to skip there, and run again alone, each on
// a fresh core etcd (test/kubernetes/storage/suite_test.go says why).
//
// Asserted: every suite test that runs has a "direct" and a "gateway" subtest, and both passed (the
// sets of passing direct and gateway tests are equal); what did not run is exactly what the Go
// files list as not run; every process of the binary exited 0.
import assert from "node:assert/strict";
import { mkdtemp, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test, type TestContext } from "node:test";
import { part } from "../support/parts.ts";
import { testConfig } from "../support/requests.ts";
import { ETCD_LINES, spawnManaged, startCoreEtcd, stopAll, tempDir, type CoreEtcd, type EtcdLine } from "./harness.ts";
import { startTenant, type RunningTenant } from "./tenant.ts";

const TENANT = "storage-suite";
// Far above what the suite uses: quota.test.ts is about limits.
const QUOTA = { storage: "1Gi", writeBytesPerSecond: "16Mi", requestsPerSecond: 100000 };
// Upstream's ProgressNotify and WatchDispatchBookmarkEvents (etcd3) run their etcd with a 1 s
// progress notify interval; every other test with etcd's default (10 min), as the watch cache's.
const PROGRESS_NOTIFY_INTERVAL = "1s";
const DEFAULT_PROGRESS_NOTIFY_INTERVAL = "10m";
// A hung suite must not hang npm test.
const SUITE_TIMEOUT = "150s";

const PATHS = ["direct", "gateway"] as const;
type PathName = (typeof PATHS)[number];

/** The watch cache's suite tests that test/kubernetes/storage/cacher_test.go lists as not run. */
const CACHER_NOT_RUN = [
  "ListInconsistentContinuation",
  "ListResourceVersionMatch",
  "GuaranteedUpdate",
  "GuaranteedUpdateChecksStoredData",
  "TransformationFailure",
  "Watch/WatchFromZero",
  "Watch/WatchError",
  "Watch/WatchContextCancel",
].map((name) => `TestCacher/${name}`);

/** Suite tests that need an etcd never written to (requireFreshEtcd in the Go files). */
const CACHER_FRESH = ["TestCacher/Lists/ListFromCacheSnapshot=false/List", "TestCacher/Watch/WatchSemantics"];
const ETCD3_FRESH = ["false", "true"].flatMap((rangeStream) =>
  ["WatchSemantics", "WatchSemanticsWithConcurrentDecode"].map((name) => `TestEtcd3/Watch/RangeStream=${rangeStream}/${name}`),
);

interface Suite {
  /** The binary's top-level test. */
  top: "TestCacher" | "TestEtcd3";
  /** The main run, in shards that run at once, each on core etcds of its own: `-test.run` and `-test.skip` patterns. */
  shards: ReadonlyArray<{ run: string; skip?: string }>;
  /** What core etcd runs with for the main run (the fresh runs: etcd's default). */
  progressNotifyInterval: string;
  notRun: readonly string[];
  fresh: readonly string[];
  /** How many suite tests run on each path (test/kubernetes/storage/'s bothPaths calls). */
  tests: number;
}

/** A suite's watch tests, and the others. */
const shards = (top: string) => [{ run: `^${top}$`, skip: `^${top}$/^Watch$` }, { run: `^${top}$/^Watch$` }];

const CACHER: Suite = { top: "TestCacher", shards: shards("TestCacher"), progressNotifyInterval: DEFAULT_PROGRESS_NOTIFY_INTERVAL, notRun: CACHER_NOT_RUN, fresh: CACHER_FRESH, tests: 52 };
const ETCD3: Suite = { top: "TestEtcd3", shards: shards("TestEtcd3"), progressNotifyInterval: PROGRESS_NOTIFY_INTERVAL, notRun: [], fresh: ETCD3_FRESH, tests: 68 };
/** What runs: the etcd3 store's suite on 3.6, the watch cache's on every line. */
const SUITE_LINES: ReadonlyArray<{ suite: Suite; line: EtcdLine }> = [...ETCD_LINES.map((line) => ({ suite: CACHER, line })), { suite: ETCD3, line: "3.6" }];
// The tests that need a fresh etcd run one after the other in this many lanes per suite and line.
const FRESH_LANES = 2;

// ---------------------------------------------------------------------------------------------
// Paths and runs
// ---------------------------------------------------------------------------------------------

/** One path's backends: a core etcd, and for the gateway path the tenant gateway in front of it. */
interface PathBackends {
  path: PathName;
  core: CoreEtcd;
  tenant?: RunningTenant;
}

async function startPath(dir: string, pathName: PathName, line: EtcdLine, progressNotifyInterval: string): Promise<PathBackends> {
  const interval = line === "3.5" ? "--experimental-watch-progress-notify-interval" : "--watch-progress-notify-interval";
  // As upstream's test etcd (etcd3/testserver's NewTestConfig: UnsafeNoFsync): some suite tests
  // write against the clock (RunTestOptionalWatchBookmarksWithCorrectResourceVersion: 100 creates
  // within 3 s).
  const flags = [`${interval}=${progressNotifyInterval}`, "--unsafe-no-fsync"];
  const core = await startCoreEtcd(path.join(dir, pathName), { line, extraFlags: flags });
  if (pathName === "direct") return { path: pathName, core };
  const config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
  const spec = { clientCertSecret: [{ name: "etcd-client", namespace: `${TENANT}-system` }], quota: QUOTA };
  const tenant = await startTenant(config, core, TENANT, spec, path.join(dir, `${pathName}-${TENANT}`));
  return { path: pathName, core, tenant };
}

type Outcome = "PASS" | "FAIL" | "SKIP";

interface Run {
  what: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
  /** Every test and subtest's outcome, by its full name. */
  outcomes: Map<string, Outcome>;
  seconds: number;
}

function suiteEnv(backends: PathBackends, progressNotifyInterval: string): Record<string, string> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: os.tmpdir(),
    // What upstream's `make test` (hack/make-rules/test.sh) sets for every unit test.
    KUBE_CACHE_MUTATION_DETECTOR: "true",
    KUBE_PANIC_WATCH_DECODE_ERROR: "true",
    STORAGE_SUITE_PROGRESS_NOTIFY_INTERVAL: progressNotifyInterval,
  };
  const way = (name: string, endpoint: string, files: { cacert: string; cert: string; key: string }): void => {
    Object.assign(env, {
      [`STORAGE_SUITE_${name}_ENDPOINTS`]: endpoint,
      [`STORAGE_SUITE_${name}_CA`]: files.cacert,
      [`STORAGE_SUITE_${name}_CERT`]: files.cert,
      [`STORAGE_SUITE_${name}_KEY`]: files.key,
    });
  };
  const core = { cacert: backends.core.caFile, cert: backends.core.certFile, key: backends.core.keyFile };
  if (backends.tenant === undefined) {
    way("DIRECT", backends.core.endpoint, core);
  } else {
    way("GATEWAY", backends.tenant.endpoint, backends.tenant.credentials);
    // The gateway's serving certificate names localhost; it listens on 127.0.0.1.
    env.STORAGE_SUITE_GATEWAY_SERVER_NAME = "localhost";
    way("GATEWAY_CORE", backends.core.endpoint, core);
  }
  return env;
}

/** `-test.run` matching exactly the test `name` and its subtests. */
function runPattern(name: string): string {
  return name.split("/").map((level) => `^${level.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`).join("/");
}

/** Runs the built suite's tests (`-test.run`, `-test.skip`) against one path, with `-test.v` output parsed; then stops the path's processes. */
async function runSuite(backends: PathBackends, tests: { run: string; skip?: string }, progressNotifyInterval: string): Promise<Run> {
  const started = Date.now();
  const args = ["-test.v", `-test.run=${tests.run}`, ...(tests.skip === undefined ? [] : [`-test.skip=${tests.skip}`]), `-test.timeout=${SUITE_TIMEOUT}`];
  const child = spawnManaged(part("storage-suite"), args, { cwd: os.tmpdir(), env: suiteEnv(backends, progressNotifyInterval) });
  const { code, signal } = await child.exited;
  const output = child.logs();
  await Promise.all([backends.tenant?.proxy.gateway.stop(), backends.core.stop()]);
  const what = `${tests.run}${tests.skip === undefined ? "" : ` but ${tests.skip}`} (${backends.path})`;
  return { what, code, signal, output, outcomes: parseOutcomes(output), seconds: (Date.now() - started) / 1000 };
}

/** `--- PASS: TestX/a/b (0.01s)` lines of `go test -v` output, at any indentation. */
function parseOutcomes(output: string): Map<string, Outcome> {
  const outcomes = new Map<string, Outcome>();
  for (const match of output.matchAll(/^\s*--- (PASS|FAIL|SKIP): (\S+) \([\d.]+s\)$/gm)) outcomes.set(match[2]!, match[1] as Outcome);
  return outcomes;
}

/** A suite's backends on a line: for each main-run shard and each fresh test, a core etcd per path, and a gateway on each gateway path's. */
interface LineBackends {
  shards: PathBackends[][];
  fresh: PathBackends[][];
}

async function startLine(dir: string, suite: Suite, line: EtcdLine): Promise<LineBackends> {
  const start = (subdir: string, interval: string): Promise<PathBackends[]> => Promise.all(PATHS.map((p) => startPath(path.join(dir, subdir), p, line, interval)));
  const [shards, fresh] = await Promise.all([
    Promise.all(suite.shards.map((_, i) => start(`main-${i}`, suite.progressNotifyInterval))),
    Promise.all(suite.fresh.map((_, i) => start(`fresh-${i}`, DEFAULT_PROGRESS_NOTIFY_INTERVAL))),
  ]);
  return { shards, fresh };
}

/**
 * A suite on one etcd line: its main run, each shard and path on its own core etcd, all at once;
 * beside it, each test that needs a fresh etcd alone on one, in a few lanes one after the other.
 * Every backend is started before any test runs: some suite tests hold deadlines that the load of
 * starts made them miss (RunWatchSemantics waits 150 ms for an event;
 * RunTestOptionalWatchBookmarksWithCorrectResourceVersion makes 100 creates within 3 s).
 */
async function runLine(suite: Suite, backends: LineBackends): Promise<Run[]> {
  const main = Promise.all(suite.shards.flatMap((shard, i) => backends.shards[i]!.map((b) => runSuite(b, shard, suite.progressNotifyInterval))));
  const lanes = Array.from({ length: FRESH_LANES }, async (_, lane) => {
    const runs: Run[] = [];
    for (const [i, name] of suite.fresh.entries()) {
      if (i % FRESH_LANES !== lane) continue;
      for (const b of backends.fresh[i]!) runs.push(await runSuite(b, { run: runPattern(name) }, DEFAULT_PROGRESS_NOTIFY_INTERVAL));
    }
    return runs;
  });
  return [...(await main), ...(await Promise.all(lanes)).flat()];
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

interface Results {
  /** Suite tests (the names above "direct"/"gateway"): each path's outcome, a fresh run's over the main run's skip. */
  byTest: Map<string, Partial<Record<PathName, Outcome>>>;
  /** Tests skipped above the paths level, with the reason given. */
  notRun: Map<string, string>;
  /** Tests skipped in the main run for want of a fresh etcd. */
  freshSkips: Set<string>;
}

function results(runs: readonly Run[]): Results {
  const byTest: Results["byTest"] = new Map();
  const notRun = new Map<string, string>();
  const freshSkips = new Set<string>();
  for (const run of runs) {
    for (const [name, outcome] of run.outcomes) {
      const match = /^(.*)\/(direct|gateway)$/.exec(name);
      if (match === null) {
        if (outcome === "SKIP" && !/\/(direct|gateway)\//.test(name)) notRun.set(name, skipReason(run.output, name));
        continue;
      }
      const [, test, p] = match as unknown as [string, string, PathName];
      const entry = byTest.get(test) ?? {};
      if (outcome === "SKIP" && testLog(run.output, name).includes(": needs an etcd never written to")) freshSkips.add(test);
      if (entry[p] === undefined || entry[p] === "SKIP") entry[p] = outcome;
      else if (outcome !== "SKIP") entry[p] = entry[p] === "FAIL" || outcome === "FAIL" ? "FAIL" : "PASS";
      byTest.set(test, entry);
    }
  }
  return { byTest, notRun, freshSkips };
}

/**
 * The lines `go test -v` printed for a test: its logs, attributed as the output's `=== RUN`,
 * `=== CONT` and `=== NAME` headers say (parallel subtests interleave), at most `max` characters.
 */
function testLog(output: string, name: string, max = 6000): string {
  const lines: string[] = [];
  let current: string | undefined;
  for (const line of output.split("\n")) {
    const header = /^=== (?:RUN|CONT|NAME|PAUSE)\s+(\S+)/.exec(line);
    if (header !== null) current = header[1];
    else if (/^\s*--- (?:PASS|FAIL|SKIP): /.test(line)) current = undefined;
    else if (current === name) lines.push(line);
  }
  const log = lines.join("\n");
  return log.length <= max ? log : `${log.slice(0, max / 2)}\n…\n${log.slice(-max / 2)}`;
}

/** The reason a skipped test gave: its first log line. */
function skipReason(output: string, name: string): string {
  return /^\s+\S+\.go:\d+: (.*)$/m.exec(testLog(output, name))?.[1] ?? "(no reason given)";
}

function summary(runs: readonly Run[], r: Results): string {
  const lines: string[] = [];
  for (const p of PATHS) {
    const outcomes = [...r.byTest.values()].map((entry) => entry[p]);
    const count = (o: Outcome): number => outcomes.filter((x) => x === o).length;
    lines.push(`${p}: ${count("PASS")} PASS, ${count("FAIL")} FAIL, ${count("SKIP")} SKIP, ${outcomes.filter((x) => x === undefined).length} missing`);
  }
  lines.push(`not run: ${r.notRun.size}; run alone on a fresh etcd: ${r.freshSkips.size}`);
  for (const [name, entry] of r.byTest) {
    if (entry.direct !== "PASS" || entry.gateway !== "PASS") lines.push(`  ${name}: direct ${entry.direct ?? "missing"}, gateway ${entry.gateway ?? "missing"}`);
  }
  for (const run of runs) lines.push(`  ${run.what}: exit ${run.signal ?? run.code} after ${run.seconds.toFixed(1)} s`);
  return lines.join("\n");
}

function failureDetails(runs: readonly Run[]): string {
  const details: string[] = [];
  for (const run of runs) {
    const failed = [...run.outcomes].filter(([, o]) => o === "FAIL").map(([name]) => name);
    const leaves = failed.filter((name) => !failed.some((other) => other.startsWith(`${name}/`)));
    for (const name of leaves.slice(0, 8)) details.push(`--- ${run.what}: ${name}\n${testLog(run.output, name) || "(no output)"}`);
    if (run.code !== 0 && leaves.length === 0) details.push(`--- ${run.what}: exit ${run.signal ?? run.code}, output tail:\n${run.output.slice(-6000)}`);
  }
  return details.join("\n");
}

function assertSuite(t: TestContext, suite: Suite, runs: readonly Run[]): void {
  const r = results(runs);
  const report = (): string => `${summary(runs, r)}\n${failureDetails(runs)}`;
  const notPassing = (p: PathName): string[] => [...r.byTest].filter(([, e]) => e[p] !== "PASS").map(([name]) => name);
  assert.deepEqual(notPassing("gateway"), [], `every suite test passes through the gateway\n${report()}`);
  assert.deepEqual(notPassing("direct"), [], `every suite test passes directly\n${report()}`);
  const passing = (p: PathName): string[] => [...r.byTest].filter(([, e]) => e[p] === "PASS").map(([name]) => name).sort();
  assert.deepEqual(passing("gateway"), passing("direct"), `the suite tests passing through the gateway are those passing directly\n${report()}`);
  assert.equal(r.byTest.size, suite.tests, `every suite test ran\n${report()}`);
  assert.deepEqual([...r.notRun.keys()].sort(), [...suite.notRun].sort(), `what did not run is what the Go files list as not run\n${report()}`);
  assert.deepEqual([...r.freshSkips].sort(), [...suite.fresh].sort(), `what needs a fresh etcd is what this file runs alone on one\n${report()}`);
  for (const run of runs) assert.deepEqual([run.code, run.signal], [0, null], `${run.what} exited 0\n${report()}`);
  t.diagnostic(summary(runs, r));
  for (const [name, reason] of r.notRun) t.diagnostic(`not run: ${name}: ${reason}`);
}

/** Asserts a suite's runs; when an assertion fails, every run's whole output is kept and named. */
async function checkSuite(t: TestContext, suite: Suite, runs: readonly Run[]): Promise<void> {
  try {
    assertSuite(t, suite, runs);
  } catch (error) {
    const dir = await mkdtemp(path.join(os.tmpdir(), `storage-suite-output-${suite.top}-`));
    await Promise.all(runs.map((run, i) => writeFile(path.join(dir, `${i}-${run.what.replace(/[^\w=.-]+/g, "_")}.txt`), run.output)));
    if (error instanceof Error && error.stack !== undefined) error.stack = error.stack.replace(error.message, `${error.message}\nthe whole output of every run is kept in ${dir}`);
    throw error;
  }
}

describe("Kubernetes' storage conformance suite, directly and through the gateway", { concurrency: true }, () => {
  const backends = new Map<string, LineBackends>();
  const key = (suite: Suite, line: EtcdLine): string => `${suite.top} ${line}`;

  before(async () => {
    await Promise.all(SUITE_LINES.map(async ({ suite, line }) => {
      backends.set(key(suite, line), await startLine(await tempDir(`storage-suite-${suite.top}-${line}-`), suite, line));
    }));
  });
  after(async () => {
    await stopAll();
  });

  for (const { suite, line } of SUITE_LINES) {
    const what = suite === CACHER ? "the watch cache (k8s.io/apiserver/pkg/storage/cacher)" : "the etcd3 store (k8s.io/apiserver/pkg/storage/etcd3)";
    test(`${what} on etcd ${line}`, async (t) => {
      await checkSuite(t, suite, await runLine(suite, backends.get(key(suite, line))!));
    });
  }
});
