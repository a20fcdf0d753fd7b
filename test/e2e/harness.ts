// End-to-end test harness: runs the containers the hooks describe as real local processes.
//
// The hooks return plain Kubernetes objects. To know that a returned Deployment or Job really
// works we run its container as written (same command, same flags), with its volume files written
// from the returned Secrets/ConfigMaps, against a real TLS etcd. Only what cannot be the same on a
// laptop is rewritten: the binary's location, mount paths (into a temp dir) and listen ports
// (container ports become free local ports, so suites can run in parallel).

import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { constants as fsConstants, readFileSync } from "node:fs";
import { access, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, symlink, writeFile, lstat } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
// The core etcd's PKI comes from the project's own issuer (hooks/pki), like every test certificate.
import { makeCorePki, type CorePki } from "../support/requests.ts";
import { ensureBuilt } from "../support/build.ts";
import { part } from "../support/parts.ts";


// ---------------------------------------------------------------------------------------------
// Ports and polling
// ---------------------------------------------------------------------------------------------

// Never fixed ports: suites run in parallel. Ports handed out lie below the kernel's ephemeral
// range: a port the kernel chose for listen(0) can be taken, between its test and its use, by the
// local end of any outgoing connection (seen: a gateway refused to start with EADDRINUSE).
const EPHEMERAL_LOW = (() => {
  try {
    return Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
  } catch {
    return 32768;
  }
})();
const LOWEST_PORT = 10_000;

// Handed out already: a port picked but not yet bound (a cluster's members are planned before any
// starts) still tests free.
const handedOut = new Set<number>();

/** A port no process listens on now, below the ephemeral range, never handed out before by this process. */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = LOWEST_PORT + Math.floor(Math.random() * (EPHEMERAL_LOW - LOWEST_PORT));
    if (handedOut.has(port)) continue;
    handedOut.add(port); // before the test: calls at once must not test the same port one after the other
    const free = await new Promise<boolean>((resolve) => {
      const server = net.createServer();
      server.unref();
      server.once("error", () => resolve(false));
      server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error(`freePort: no free port between ${LOWEST_PORT} and ${EPHEMERAL_LOW} after 100 tries`);
}

const POLL_INTERVAL_MS = 100;

/** Whether something accepts TCP connections on 127.0.0.1:port (a cheap first readiness probe). */
export function tcpAccepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.setTimeout(1_000);
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.on("connect", () => done(true));
    socket.on("error", () => done(false));
    socket.on("timeout", () => done(false));
  });
}

/** Thrown by a probe when waiting longer is pointless (the process waited for has exited): waitFor fails at once. */
export class GiveUp extends Error {}

/**
 * Polls `probe` until it returns something other than undefined/false/null. A throwing probe
 * counts as "not yet" (the thing we wait for is usually refusing connections at first); the last
 * error is kept so a timeout says *why* it never became ready. `diagnostics` (e.g. a process's
 * logs) is appended to the timeout message.
 */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | false | null>,
  timeoutMs = 20_000,
  diagnostics?: () => string,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false && value !== null) return value;
    } catch (error) {
      if (error instanceof GiveUp) {
        lastError = error;
        break;
      }
      lastError = error;
    }
    if (Date.now() >= deadline) break;
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
  }
  const last = lastError === undefined ? "none (probe kept answering not-ready)" : describeError(lastError);
  const extra = diagnostics ? `\n--- diagnostics ---\n${tail(diagnostics(), 4000)}` : "";
  const outcome = lastError instanceof GiveUp ? "gave up" : `timed out after ${timeoutMs} ms`;
  throw new Error(`${outcome} waiting for ${what}; last error: ${last}${extra}`);
}

function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function tail(text: string, max: number): string {
  return text.length <= max ? text : `…${text.slice(-max)}`;
}

// ---------------------------------------------------------------------------------------------
// Processes and cleanup
// ---------------------------------------------------------------------------------------------

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ManagedProcess {
  process: ChildProcess;
  /** stdout and stderr interleaved, as received so far. */
  logs(): string;
  exited: Promise<ExitStatus>;
  /** SIGTERM, then SIGKILL if it has not exited within a few seconds; resolves once it exited. */
  stop(): Promise<void>;
}

const liveSet = new Set<ManagedProcess>();
const cleanupTasks: Array<() => Promise<void>> = [];
const STOP_GRACE_MS = 5_000;
const MAX_LOG_CHARS = 1_000_000;

// Last line of defence: if the test process dies without running `after`, take the children
// with it (detached:false alone does not kill them when node exits).
process.on("exit", () => {
  for (const p of liveSet) p.process.kill("SIGKILL");
});

/** Processes started by this harness that have not exited yet. */
export function liveProcesses(): ManagedProcess[] {
  return [...liveSet];
}

/** Registers a task for `stopAll()` (run after all processes are stopped, last registered first). */
export function onCleanup(task: () => Promise<void>): void {
  cleanupTasks.push(task);
}

/** For `after()`: stops every process this harness started, then runs the cleanup tasks. */
export async function stopAll(): Promise<void> {
  await Promise.all([...liveSet].map((p) => p.stop()));
  const errors: unknown[] = [];
  for (const task of cleanupTasks.splice(0).reverse()) {
    try {
      await task();
    } catch (error) {
      errors.push(error);
    }
  }
  if (errors.length > 0) throw new AggregateError(errors, "stopAll: some cleanup tasks failed");
}

/** A fresh directory under the OS temp dir, removed by `stopAll()`. */
export async function tempDir(prefix = "e2e-"): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  onCleanup(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

interface SpawnOptions {
  env: Record<string, string>;
  cwd: string;
  /** Written to the process's stdin, which is then closed; without it stdin is /dev/null. */
  input?: string;
}

interface SpawnedProcess extends ManagedProcess {
  stdout(): string;
  stderr(): string;
}

// After 'exit', wait this long for 'close' (end of output): a grandchild (an `sh -c` Job's
// background process) holding the pipes open must not make `exited` hang.
const CLOSE_AFTER_EXIT_MS = 1_000;

/** Starts a process that `stopAll()` stops (SIGTERM, then SIGKILL) and a dying test process takes along. */
export function spawnManaged(file: string, args: readonly string[], options: SpawnOptions): SpawnedProcess {
  const child = spawn(file, args, {
    cwd: options.cwd,
    env: options.env,
    detached: false,
    stdio: [options.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
  });
  if (options.input !== undefined) {
    child.stdin?.on("error", () => undefined); // a process that exits without reading its input
    child.stdin?.end(options.input);
  }
  const output = { all: "", stdout: "", stderr: "" };
  const capped = (text: string): string => (text.length > MAX_LOG_CHARS ? text.slice(-MAX_LOG_CHARS / 2) : text);
  const append = (stream: "stdout" | "stderr", chunk: Buffer): void => {
    const text = chunk.toString("utf8");
    output.all = capped(output.all + text);
    output[stream] = capped(output[stream] + text);
  };
  child.stdout?.on("data", (chunk: Buffer) => append("stdout", chunk));
  child.stderr?.on("data", (chunk: Buffer) => append("stderr", chunk));

  const exited = new Promise<ExitStatus>((resolve) => {
    child.on("close", (code, signal) => resolve({ code, signal }));
    child.on("exit", (code, signal) => {
      setTimeout(() => resolve({ code, signal }), CLOSE_AFTER_EXIT_MS).unref();
    });
    child.on("error", (error) => {
      append("stderr", Buffer.from(`\n[harness] spawn error: ${error.message}\n`));
      if (child.pid === undefined) resolve({ code: null, signal: null });
    });
  });

  const managed: SpawnedProcess = {
    process: child,
    logs: () => output.all,
    stdout: () => output.stdout,
    stderr: () => output.stderr,
    exited,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS);
        await exited;
        clearTimeout(timer);
      }
      await exited;
    },
  };
  liveSet.add(managed);
  void exited.then(() => liveSet.delete(managed));
  return managed;
}

async function assertExecutable(file: string, hint: string): Promise<void> {
  try {
    await access(file, fsConstants.X_OK);
  } catch {
    throw new Error(`${file} is not an executable file on this machine (${hint})`);
  }
}

// ---------------------------------------------------------------------------------------------
// etcdctl and core etcd
// ---------------------------------------------------------------------------------------------

export interface EtcdctlResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** File paths of a client's TLS material. No `cert`/`key`: a certificate-less client. */
export interface EtcdctlCredentials {
  cacert: string;
  cert?: string;
  key?: string;
}

/**
 * The etcd release lines the tests run, each built from the Go module pinned in
 * test/kubernetes/etcd-<line>/ (test/support/parts.ts). 3.6 is every end-to-end test's core etcd;
 * the data-path tests (the differential oracle, kube-apiserver's call shapes) run on 3.5 too,
 * which clusters still run. Both answer watch progress requests (3.5.13+), which kube-apiserver's
 * feature check assumes.
 */
export const ETCD_LINES = ["3.6", "3.5"] as const;
export type EtcdLine = (typeof ETCD_LINES)[number];
export const DEFAULT_ETCD_LINE: EtcdLine = "3.6";

export interface EtcdRelease {
  line: EtcdLine;
  /** The built etcd and etcdctl of this line. */
  etcd: string;
  etcdctl: string;
  /** e.g. "3.6.16", from `etcd --version`: what Maintenance/Status reports. */
  version: string;
}

function reportedVersion(file: string, args: string[], line: RegExp): string {
  const output = execFileSync(file, args, { encoding: "utf8", env: {} });
  const version = line.exec(output)?.[1];
  if (version === undefined) throw new Error(`${file} ${args.join(" ")} names no version: ${output.trim()}`);
  return version;
}

const releases = new Map<EtcdLine, EtcdRelease>();

/**
 * The built etcd and etcdctl of a line, and their version. Throws (so every suite using it fails)
 * when they are not built, or when what is built is not of that line: a pin moved to another
 * line would otherwise test under a wrong name.
 */
export function etcdRelease(line: EtcdLine = DEFAULT_ETCD_LINE): EtcdRelease {
  let release = releases.get(line);
  if (release === undefined) {
    const etcd = part(`etcd-${line}`);
    const etcdctl = part(`etcdctl-${line}`);
    const version = reportedVersion(etcd, ["--version"], /^etcd Version: (\d+\.\d+\.\d+)/m);
    const etcdctlVersion = reportedVersion(etcdctl, ["version"], /^etcdctl version: (\d+\.\d+\.\d+)/m);
    if (!version.startsWith(`${line}.`) || etcdctlVersion !== version) {
      throw new Error(`the etcd ${line} parts are etcd ${version} and etcdctl ${etcdctlVersion}: test/kubernetes/etcd-${line}/go.mod must pin etcd ${line}.x`);
    }
    release = { line, etcd, etcdctl, version };
    releases.set(line, release);
  }
  return release;
}

// Short, so a refused or dead endpoint fails fast. etcdctl (3.4 to 3.6 alike) does not block
// on dialing: a refused TLS handshake (e.g. no client certificate) ends only at the command
// timeout. A caller needing longer passes its own --command-timeout in `args` (the last occurrence
// wins).
const ETCDCTL_DIAL_TIMEOUT = "2s";
const ETCDCTL_COMMAND_TIMEOUT = "3s";
const ETCDCTL_KILL_AFTER_MS = 15_000;

/**
 * Runs etcdctl (API v3) of `line` against `endpoint` with the given credentials and short
 * timeouts; a failed command is a non-zero `code`, not an exception.
 */
export async function runEtcdctl(
  endpoint: string,
  credentials: EtcdctlCredentials,
  args: readonly string[],
  line: EtcdLine = DEFAULT_ETCD_LINE,
): Promise<EtcdctlResult> {
  const tls = [`--cacert=${credentials.cacert}`];
  if (credentials.cert !== undefined) tls.push(`--cert=${credentials.cert}`);
  if (credentials.key !== undefined) tls.push(`--key=${credentials.key}`);
  const argv = [
    `--endpoints=${endpoint}`,
    ...tls,
    `--dial-timeout=${ETCDCTL_DIAL_TIMEOUT}`,
    `--command-timeout=${ETCDCTL_COMMAND_TIMEOUT}`,
    ...args,
  ];
  // A minimal environment: the developer's ETCDCTL_* variables must not change what is tested.
  const child = spawnManaged(etcdRelease(line).etcdctl, argv, {
    cwd: os.tmpdir(),
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ETCDCTL_API: "3" },
  });
  // Guard against a hung etcdctl (e.g. a watch) outliving the test.
  const guard = setTimeout(() => child.process.kill("SIGKILL"), ETCDCTL_KILL_AFTER_MS);
  try {
    const { code } = await child.exited;
    return { code, stdout: child.stdout(), stderr: child.stderr() };
  } finally {
    clearTimeout(guard);
  }
}

/** The core etcd's PKI, written to files, and the same material as PEM for gRPC clients. */
export interface CoreTls {
  pki: CorePki;
  caFile: string;
  /** Backend client certificate/key files (empty CN). */
  certFile: string;
  keyFile: string;
  /** PEM of the CA and the backend client certificate/key, for test/support/etcd-client.ts's connect(). */
  tls: { ca: string; cert: string; key: string };
}

/** One etcd process with fixed ports and data dir, which can be stopped and started again. */
export interface EtcdMember {
  name: string;
  /** https://127.0.0.1:<port> */
  endpoint: string;
  logs(): string;
  /** SIGTERM (a leader hands leadership over first), then SIGKILL after a grace period. */
  stop(): Promise<void>;
  /** SIGKILL at once: an abrupt failure (a leader's followers must elect a new one). */
  kill(): Promise<void>;
  /** Starts again with the same data dir and ports (fault tests), waits until healthy. */
  start(): Promise<void>;
  /** SIGSTOP: the member answers nothing and closes nothing, as a node that froze or was cut off. */
  freeze(): void;
  /** The running process's ID (its memory is read from /proc). */
  pid(): number | undefined;
  /** SIGCONT after freeze(), then waits until healthy. */
  thaw(): Promise<void>;
  etcdctl(args: readonly string[]): Promise<EtcdctlResult>;
}

export type CoreEtcd = EtcdMember & CoreTls & {
  /** The etcd it runs. */
  release: EtcdRelease;
};

export interface CoreCluster extends CoreTls {
  /** The etcd its members run. */
  release: EtcdRelease;
  members: EtcdMember[];
  /** Every member's client URL, in member order. */
  endpoints: string[];
  /** etcdctl against all endpoints at once (etcdctl picks a live one). */
  etcdctl(args: readonly string[]): Promise<EtcdctlResult>;
}

export interface CoreEtcdOptions {
  /** Appended to the harness's flags, e.g. `--quota-backend-bytes=...`, `--auto-compaction-*`. */
  extraFlags?: readonly string[];
  /** The etcd release line to run (its etcdctl too); DEFAULT_ETCD_LINE unless given. */
  line?: EtcdLine;
}

async function writeFiles(dir: string, files: Record<string, string>): Promise<void> {
  await mkdir(dir, { recursive: true });
  await Promise.all(Object.entries(files).map(([name, content]) => writeFile(path.join(dir, name), content, { mode: 0o600 })));
}

/** One PKI for every member: its server certificate covers 127.0.0.1, where they all listen. */
async function writeCoreTls(base: string): Promise<CoreTls> {
  const pki = await makeCorePki();
  const dir = path.join(base, "pki");
  await writeFiles(dir, {
    "ca.crt": pki.ca.certPem,
    "server.crt": pki.server.certPem,
    "server.key": pki.server.keyPem,
    "client.crt": pki.client.certPem,
    "client.key": pki.client.keyPem,
  });
  return {
    pki,
    caFile: path.join(dir, "ca.crt"),
    certFile: path.join(dir, "client.crt"),
    keyFile: path.join(dir, "client.key"),
    tls: { ca: pki.ca.certPem, cert: pki.client.certPem, key: pki.client.keyPem },
  };
}

interface MemberPlan {
  name: string;
  clientPort: number;
  peerUrl: string;
}

async function planMembers(names: readonly string[]): Promise<MemberPlan[]> {
  const plans: MemberPlan[] = [];
  for (const name of names) plans.push({ name, clientPort: await freePort(), peerUrl: `http://127.0.0.1:${await freePort()}` });
  return plans;
}

interface ManagedMember {
  member: EtcdMember;
  /** Spawns the process without waiting: a cluster's members only become healthy together. */
  spawn(): void;
  waitHealthy(): Promise<void>;
}

/**
 * A member of the cluster `plans` (TLS with client-certificate authentication on its client URL,
 * plain http between peers on 127.0.0.1), with its data in `base/<name>`.
 */
function etcdMember(plan: MemberPlan, plans: readonly MemberPlan[], base: string, tls: CoreTls, release: EtcdRelease, extraFlags: readonly string[]): ManagedMember {
  const endpoint = `https://127.0.0.1:${plan.clientPort}`;
  const args = [
    `--name=${plan.name}`,
    `--data-dir=${path.join(base, plan.name)}`,
    `--listen-client-urls=${endpoint}`,
    `--advertise-client-urls=${endpoint}`,
    `--listen-peer-urls=${plan.peerUrl}`,
    `--initial-advertise-peer-urls=${plan.peerUrl}`,
    `--initial-cluster=${plans.map((p) => `${p.name}=${p.peerUrl}`).join(",")}`,
    // Unique per cluster: a member of another suite's cluster that got a reused port is refused.
    `--initial-cluster-token=${path.basename(base)}-${plans[0]!.clientPort}`,
    `--cert-file=${path.join(base, "pki", "server.crt")}`,
    `--key-file=${path.join(base, "pki", "server.key")}`,
    `--trusted-ca-file=${tls.caFile}`,
    "--client-cert-auth",
    "--logger=zap",
    "--log-outputs=stderr",
    ...extraFlags,
  ];
  const credentials = { cacert: tls.caFile, cert: tls.certFile, key: tls.keyFile };
  const etcdctl = (a: readonly string[]): Promise<EtcdctlResult> => runEtcdctl(endpoint, credentials, a, release.line);

  let current: ManagedProcess | undefined;
  const spawnMember = (): void => {
    if (current !== undefined && current.process.exitCode === null && current.process.signalCode === null) {
      throw new Error(`etcd member ${plan.name} is already running`);
    }
    current = spawnManaged(release.etcd, args, { cwd: base, env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } });
  };
  const waitHealthy = async (): Promise<void> => {
    const proc = current!;
    await waitFor(
      `etcd member ${plan.name} at ${endpoint} to be healthy`,
      async () => {
        if (proc.process.exitCode !== null) throw new Error(`etcd member ${plan.name} exited with code ${proc.process.exitCode}`);
        // etcdctl against a closed port waits its whole dial timeout; a TCP probe first keeps
        // (re)starts at ~0.5 s instead of ~3 s.
        if (!(await tcpAccepts(plan.clientPort))) throw new Error(`nothing listens on ${endpoint} yet`);
        const result = await etcdctl(["endpoint", "health"]);
        if (result.code !== 0) throw new Error(result.stderr.trim() || result.stdout.trim());
        return true;
      },
      20_000,
      () => proc.logs(),
    );
  };
  const member: EtcdMember = {
    name: plan.name,
    endpoint,
    logs: () => current?.logs() ?? "",
    stop: async () => current?.stop(),
    kill: async () => {
      current?.process.kill("SIGKILL");
      await current?.exited;
    },
    start: async () => {
      spawnMember();
      await waitHealthy();
    },
    freeze: () => current?.process.kill("SIGSTOP"),
    pid: () => current?.process.pid,
    thaw: async () => {
      current?.process.kill("SIGCONT");
      await waitHealthy();
    },
    etcdctl,
  };
  return { member, spawn: spawnMember, waitHealthy };
}

/**
 * A single-member TLS etcd of `options.line` (3.6 unless given) with client-certificate
 * authentication, on free ports, with its data in `dir/core-etcd`. Resolves once
 * `etcdctl endpoint health` succeeds.
 */
export async function startCoreEtcd(dir: string, options: CoreEtcdOptions = {}): Promise<CoreEtcd> {
  const release = etcdRelease(options.line);
  const base = path.join(dir, "core-etcd");
  const tls = await writeCoreTls(base);
  const plans = await planMembers(["core"]);
  const { member } = etcdMember(plans[0]!, plans, base, tls, release, options.extraFlags ?? []);
  await member.start();
  return { ...member, ...tls, release };
}

/**
 * A `members`-member TLS etcd cluster (client-certificate authentication on every client URL, one
 * shared PKI), on free ports, with its data in `dir/core-cluster/<member>`. Every member is
 * started at once (none is healthy before a quorum is up); resolves once each is healthy.
 */
export async function startCoreCluster(dir: string, options: CoreEtcdOptions & { members: number }): Promise<CoreCluster> {
  const release = etcdRelease(options.line);
  const base = path.join(dir, "core-cluster");
  const tls = await writeCoreTls(base);
  const plans = await planMembers(Array.from({ length: options.members }, (_, i) => `core-${i}`));
  const managed = plans.map((plan) => etcdMember(plan, plans, base, tls, release, options.extraFlags ?? []));
  for (const m of managed) m.spawn();
  await Promise.all(managed.map((m) => m.waitHealthy()));
  const members = managed.map((m) => m.member);
  const endpoints = members.map((m) => m.endpoint);
  const credentials = { cacert: tls.caFile, cert: tls.certFile, key: tls.keyFile };
  return {
    ...tls,
    release,
    members,
    endpoints,
    etcdctl: (args) => runEtcdctl(endpoints.join(","), credentials, args, release.line),
  };
}

// ---------------------------------------------------------------------------------------------
// Kubernetes objects (the minimal shapes this harness reads; plain JSON from the hooks fits them)
// ---------------------------------------------------------------------------------------------

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  [key: string]: unknown;
}

export interface K8sObject {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
  type?: string;
  data?: Record<string, string>;
  stringData?: Record<string, string>;
  binaryData?: Record<string, string>;
  spec?: unknown;
  [key: string]: unknown;
}

export interface KeyToPath {
  key: string;
  path: string;
  mode?: number;
}

export interface TokenProjection {
  path: string;
  audience?: string;
  expirationSeconds?: number;
}

/** What the kubelet asks the API server for a projected serviceAccountToken (a TokenRequest of the pod's service account). */
export type TokenIssuer = (serviceAccount: string, projection: TokenProjection) => Promise<string>;

export interface SecretProjection {
  name?: string;
  items?: KeyToPath[];
  optional?: boolean;
}

export interface Volume {
  name: string;
  secret?: { secretName?: string; items?: KeyToPath[]; optional?: boolean; defaultMode?: number };
  configMap?: { name?: string; items?: KeyToPath[]; optional?: boolean; defaultMode?: number };
  projected?: { sources?: Array<{ secret?: SecretProjection; configMap?: SecretProjection; serviceAccountToken?: TokenProjection; [other: string]: unknown }>; defaultMode?: number };
  emptyDir?: Record<string, unknown>;
  persistentVolumeClaim?: { claimName?: string; readOnly?: boolean };
  [other: string]: unknown;
}

export interface VolumeMount {
  name: string;
  mountPath: string;
  subPath?: string;
  readOnly?: boolean;
}

export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: {
    secretKeyRef?: { name?: string; key: string; optional?: boolean };
    configMapKeyRef?: { name?: string; key: string; optional?: boolean };
    [other: string]: unknown;
  };
}

export interface Container {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  volumeMounts?: VolumeMount[];
  workingDir?: string;
  [other: string]: unknown;
}

export interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  volumes?: Volume[];
  [other: string]: unknown;
}

/** ConfigMap carrying the core etcd CA, as the hook expects to be given. */
export function coreCaConfigMap(namespace: string, name: string, caPem: string): K8sObject {
  return { apiVersion: "v1", kind: "ConfigMap", metadata: { name, namespace }, data: { "ca.crt": caPem } };
}

/** kubernetes.io/tls Secret carrying the backend client certificate for core etcd. */
export function coreClientSecret(namespace: string, name: string, certPem: string, keyPem: string): K8sObject {
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name, namespace },
    type: "kubernetes.io/tls",
    data: { "tls.crt": base64(certPem), "tls.key": base64(keyPem) },
  };
}

export function base64(text: string): string {
  return Buffer.from(text, "utf8").toString("base64");
}

/** The pod template's spec of a Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or CronJob. */
export function podSpecOf(object: K8sObject): PodSpec {
  const spec = object.spec as Record<string, any> | undefined;
  const found =
    object.kind === "Pod" ? spec : object.kind === "CronJob" ? spec?.jobTemplate?.spec?.template?.spec : spec?.template?.spec;
  if (found === undefined || !Array.isArray(found.containers)) {
    throw new Error(`${object.kind ?? "object"} ${describeName(object)} has no pod spec with containers`);
  }
  return found as PodSpec;
}

/** The object of that kind, namespace and name in `objects` (exact match, as the API server would). */
export function findObject(objects: readonly K8sObject[], kind: string, namespace: string, name: string): K8sObject | undefined {
  return objects.find((o) => o.kind === kind && o.metadata?.namespace === namespace && o.metadata?.name === name);
}

function describeName(object: K8sObject): string {
  return `${object.metadata?.namespace ?? "<no namespace>"}/${object.metadata?.name ?? "<no name>"}`;
}

/** Explains a failed look-up, pointing at near misses (e.g. the namespace was left out). */
function missingObjectError(objects: readonly K8sObject[], kind: string, namespace: string, name: string, usedBy: string): Error {
  const nearMisses = objects
    .filter((o) => o.kind === kind && o.metadata?.name === name)
    .map((o) => `metadata.namespace=${JSON.stringify(o.metadata?.namespace)}`);
  const hint = nearMisses.length > 0 ? ` (found ${kind} ${name} with ${nearMisses.join(", ")})` : "";
  return new Error(`${kind} ${namespace}/${name} (used by ${usedBy}) is not among the objects${hint}`);
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * The decoded key→bytes content of a Secret or ConfigMap. Secret `data` must be valid base64
 * (the API server rejects anything else, so a hook that forgets to encode must fail here too);
 * Secret `stringData` and ConfigMap `data` are plain text.
 */
function objectContent(object: K8sObject): Map<string, Buffer> {
  const content = new Map<string, Buffer>();
  const where = `${object.kind} ${describeName(object)}`;
  const decode = (field: string, values: Record<string, string> | undefined): void => {
    for (const [key, value] of Object.entries(values ?? {})) {
      if (typeof value !== "string" || !BASE64.test(value)) throw new Error(`${where} ${field}.${key} is not valid base64`);
      content.set(key, Buffer.from(value, "base64"));
    }
  };
  const plain = (field: string, values: Record<string, string> | undefined): void => {
    for (const [key, value] of Object.entries(values ?? {})) {
      if (typeof value !== "string") throw new Error(`${where} ${field}.${key} is not a string`);
      content.set(key, Buffer.from(value, "utf8"));
    }
  };
  if (object.kind === "Secret") {
    decode("data", object.data);
    plain("stringData", object.stringData); // the API server merges stringData over data
  } else {
    plain("data", object.data);
    decode("binaryData", object.binaryData);
  }
  return content;
}

// ---------------------------------------------------------------------------------------------
// Volumes
// ---------------------------------------------------------------------------------------------

type VolumeKind = "secret" | "configMap" | "projected" | "emptyDir" | "persistentVolumeClaim";

export interface MountedPath {
  /** Path inside the container. */
  mountPath: string;
  /** Where it is on this machine (rootDir + mountPath). */
  localPath: string;
  volumeName: string;
  volumeKind: VolumeKind;
}

export interface MaterializedVolumes {
  mounts: MountedPath[];
  /** Replaces every mount path inside `text` (whole path segments only) by its local path. */
  rewritePath(text: string): string;
}

interface Projection {
  kind: "Secret" | "ConfigMap";
  name: string;
  items?: KeyToPath[];
  optional: boolean;
  defaultMode?: number;
}

function projectionsOf(volume: Volume): { kind: VolumeKind; projections: Projection[]; tokens: TokenProjection[] } {
  if (volume.secret) {
    const s = volume.secret;
    return { kind: "secret", tokens: [], projections: [{ kind: "Secret", name: required(s.secretName, `volume ${volume.name}: secret.secretName`), items: s.items, optional: s.optional === true, defaultMode: s.defaultMode }] };
  }
  if (volume.configMap) {
    const c = volume.configMap;
    return { kind: "configMap", tokens: [], projections: [{ kind: "ConfigMap", name: required(c.name, `volume ${volume.name}: configMap.name`), items: c.items, optional: c.optional === true, defaultMode: c.defaultMode }] };
  }
  if (volume.projected) {
    const sources = volume.projected.sources ?? [];
    const tokens = sources.flatMap((source) => (source.serviceAccountToken ? [source.serviceAccountToken] : []));
    const projections = sources.flatMap((source, i): Projection[] => {
      if (source.serviceAccountToken) return [];
      const ref = source.secret ?? source.configMap;
      if (ref === undefined) {
        throw new Error(`volume ${volume.name}: projected.sources[${i}] (${Object.keys(source).join(",")}) is not supported by the harness (only secret, configMap and serviceAccountToken)`);
      }
      return [{
        kind: source.secret ? "Secret" : "ConfigMap",
        name: required(ref.name, `volume ${volume.name}: projected.sources[${i}] name`),
        items: ref.items,
        optional: ref.optional === true,
        defaultMode: volume.projected?.defaultMode,
      }];
    });
    return { kind: "projected", projections, tokens };
  }
  if (volume.emptyDir) return { kind: "emptyDir", projections: [], tokens: [] };
  if (volume.persistentVolumeClaim) return { kind: "persistentVolumeClaim", projections: [], tokens: [] };
  const types = Object.keys(volume).filter((k) => k !== "name");
  throw new Error(`volume ${volume.name}: type ${types.join(",") || "<none>"} is not supported by the harness (secret, configMap, projected, emptyDir, persistentVolumeClaim)`);
}

function required(value: string | undefined, what: string): string {
  if (value === undefined || value === "") throw new Error(`${what} is missing`);
  return value;
}

/** A relative path without `..` (what the API server accepts for items[].path and subPath). */
function safeRelative(p: string, what: string): string {
  if (p === "" || path.isAbsolute(p) || p.split("/").includes("..")) throw new Error(`${what} ${JSON.stringify(p)} must be a relative path without '..'`);
  return p;
}

/** The files (relative path → bytes, mode) a secret/configMap/projected volume would show. */
function volumeFiles(volume: Volume, projections: Projection[], objects: readonly K8sObject[], namespace: string): Map<string, { bytes: Buffer; mode: number }> {
  const files = new Map<string, { bytes: Buffer; mode: number }>();
  for (const projection of projections) {
    const usedBy = `volume ${volume.name}`;
    const object = findObject(objects, projection.kind, namespace, projection.name);
    if (object === undefined) {
      if (projection.optional) continue;
      throw missingObjectError(objects, projection.kind, namespace, projection.name, usedBy);
    }
    const content = objectContent(object);
    const mode = projection.defaultMode ?? 0o644;
    const items = projection.items ?? [...content.keys()].map((key) => ({ key, path: key }) as KeyToPath);
    for (const item of items) {
      const bytes = content.get(item.key);
      if (bytes === undefined) {
        if (projection.optional) continue;
        throw new Error(`${projection.kind} ${namespace}/${projection.name} has no key ${JSON.stringify(item.key)} (used by ${usedBy}); keys: ${[...content.keys()].join(", ") || "<none>"}`);
      }
      files.set(safeRelative(item.path, `${usedBy} items[].path`), { bytes, mode: item.mode ?? mode });
    }
  }
  return files;
}

/**
 * Writes the volume's files, each atomically (temp file + rename) so that re-materializing while
 * a process runs (e.g. a certificate rotation test) never shows it a half-written file; keys that
 * disappeared are removed, as the kubelet would.
 */
async function writeVolume(dir: string, files: Map<string, { bytes: Buffer; mode: number }>): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [relative, { bytes, mode }] of files) {
    const target = path.join(dir, relative);
    await mkdir(path.dirname(target), { recursive: true });
    const temp = `${target}.tmp-${process.pid}`;
    await writeFile(temp, bytes, { mode });
    await rename(temp, target);
  }
  const wanted = new Set([...files.keys()].map((r) => path.join(dir, r)));
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const full = path.join(entry.parentPath, entry.name);
    if (entry.isFile() && !wanted.has(full)) await rm(full, { force: true });
  }
}

/** Escapes a string for use inside a RegExp. */
function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

// A container path only counts as a match when it is a whole token or followed by "/": so mount
// "/etc/ca" rewrites "/etc/ca/ca.crt" and "--x=/etc/ca" but never "/etc/ca2" or "/x/etc/ca".
const PATH_START = `(^|[\\s=,:;"'(])`;
const PATH_END = `(?=$|[/\\s,:;"')])`;

function prefixReplacer(mapping: ReadonlyArray<readonly [string, string]>): (text: string) => string {
  // Longest first, so a nested mount (/etc/a/b inside /etc/a) wins over its parent.
  const sorted = [...mapping].sort((a, b) => b[0].length - a[0].length);
  if (sorted.length === 0) return (text) => text;
  const pattern = new RegExp(`${PATH_START}(${sorted.map(([from]) => escapeRegExp(from)).join("|")})${PATH_END}`, "g");
  const lookup = new Map(sorted);
  return (text) => text.replace(pattern, (_m, before: string, from: string) => `${before}${lookup.get(from)}`);
}

async function replaceWithSymlink(linkPath: string, target: string): Promise<void> {
  await mkdir(path.dirname(linkPath), { recursive: true });
  const existing = await lstat(linkPath).catch(() => undefined);
  if (existing !== undefined) {
    if (!existing.isSymbolicLink()) throw new Error(`${linkPath} already exists and is not a mount the harness made (overlapping volumeMounts?)`);
    await rm(linkPath);
  }
  await symlink(target, linkPath);
}

/**
 * Writes every volume of the pod under `rootDir/.volumes/<name>` (all of them, like the kubelet:
 * a pod does not start when any non-optional Secret/ConfigMap of its volumes is missing), then
 * makes each of the container's mounts visible at `rootDir + mountPath` (a symlink, so that an
 * emptyDir mounted by two containers sharing `rootDir` is one directory). `subPath` links to that
 * entry of the volume. A projected serviceAccountToken is issued by `tokens` for the pod's
 * service account, as the kubelet has it issued by the API server.
 */
export async function materializeVolumes(
  podSpec: PodSpec,
  container: Container,
  objects: readonly K8sObject[],
  rootDir: string,
  namespace: string,
  claims: Readonly<Record<string, string>> = {},
  tokens?: TokenIssuer,
): Promise<MaterializedVolumes> {
  const volumeDirs = new Map<string, { dir: string; kind: VolumeKind }>();
  for (const volume of podSpec.volumes ?? []) {
    const { kind, projections, tokens: tokenProjections } = projectionsOf(volume);
    if (kind === "persistentVolumeClaim") {
      // A local directory per claim stands in for the volume bound to it: every pod naming the
      // claim sees the same files, as pods sharing a ReadWriteMany volume do.
      const claim = volume.persistentVolumeClaim?.claimName ?? "";
      const dir = claims[claim];
      if (dir === undefined) throw new Error(`volume ${volume.name}: PersistentVolumeClaim ${claim} has no local directory in \`claims\` (claims: ${Object.keys(claims).join(", ") || "<none>"})`);
      await mkdir(dir, { recursive: true });
      volumeDirs.set(volume.name, { dir, kind });
      continue;
    }
    const dir = path.join(rootDir, ".volumes", safeRelative(volume.name, "volume name"));
    if (kind === "emptyDir") await mkdir(dir, { recursive: true }); // kept across calls: it is the pod's scratch space
    else {
      const files = volumeFiles(volume, projections, objects, namespace);
      for (const projection of tokenProjections) {
        if (tokens === undefined) throw new Error(`volume ${volume.name}: a serviceAccountToken projection needs a token issuer (runContainer's \`kubernetes\`)`);
        const serviceAccount = typeof podSpec.serviceAccountName === "string" ? podSpec.serviceAccountName : "default";
        files.set(safeRelative(projection.path, `volume ${volume.name} serviceAccountToken.path`), { bytes: Buffer.from(await tokens(serviceAccount, projection)), mode: volume.projected?.defaultMode ?? 0o644 });
      }
      await writeVolume(dir, files);
    }
    volumeDirs.set(volume.name, { dir, kind });
  }

  const mounts: MountedPath[] = [];
  for (const mount of container.volumeMounts ?? []) {
    const volume = volumeDirs.get(mount.name);
    if (volume === undefined) throw new Error(`container ${container.name}: volumeMount ${mount.name} names no volume of the pod`);
    if (!path.isAbsolute(mount.mountPath)) throw new Error(`container ${container.name}: mountPath ${mount.mountPath} is not absolute`);
    const mountPath = path.posix.normalize(mount.mountPath).replace(/\/+$/, "");
    const localPath = path.join(rootDir, mountPath);
    let target = volume.dir;
    if (mount.subPath !== undefined && mount.subPath !== "") {
      target = path.join(volume.dir, safeRelative(mount.subPath, `volumeMount ${mount.name} subPath`));
      if (volume.kind === "emptyDir" || volume.kind === "persistentVolumeClaim") await mkdir(target, { recursive: true }); // the kubelet creates a missing subPath dir
      else await stat(target).catch(() => {
        throw new Error(`container ${container.name}: volumeMount ${mount.name} subPath ${mount.subPath} is not in volume ${mount.name}`);
      });
    }
    await replaceWithSymlink(localPath, target);
    mounts.push({ mountPath, localPath, volumeName: mount.name, volumeKind: volume.kind });
  }
  return { mounts, rewritePath: prefixReplacer(mounts.map((m) => [m.mountPath, m.localPath] as const)) };
}

// ---------------------------------------------------------------------------------------------
// Running a container
// ---------------------------------------------------------------------------------------------

export interface RunContainerOptions {
  podSpec: PodSpec;
  containerName: string;
  /** The pod's namespace: where its Secrets/ConfigMaps are looked up. */
  namespace: string;
  /** What the hook returned (plus given inputs such as the core CA ConfigMap). */
  objects: readonly K8sObject[];
  /** Per-test directory; the container's filesystem view lives in `dir/root`. */
  dir: string;
  /** Container executable → local executable, e.g. {"/usr/local/bin/etcdctl": etcdRelease().etcdctl}. */
  binaries: Record<string, string>;
  /** Container port → local port for listen addresses (0.0.0.0:p, 127.0.0.1:p, localhost:p, [::]:p). */
  ports: Record<number, number>;
  /** Container paths that are not volumes but must be mapped somewhere local (rarely needed). */
  extraPaths?: Record<string, string>;
  /** What the image supplies where the container names nothing: its command (ENTRYPOINT/CMD) and working directory. */
  image?: { command: string[]; workingDir: string };
  /** PersistentVolumeClaim name → the local directory that stands in for its volume. */
  claims?: Record<string, string>;
  /** The API server as the kubelet shows it to every container (KUBERNETES_SERVICE_HOST and _PORT), and what issues projected tokens. */
  kubernetes?: { host: string; port: number; tokens: TokenIssuer };
}

export interface RunningContainer extends ManagedProcess {
  /** The final argv after the executable (for assertions). */
  args: string[];
  /** The executable actually run. */
  executable: string;
  mounts: MountedPath[];
  /** Maps a container path (or any text with container paths in it) to this machine. */
  rewritePath(text: string): string;
  /** What the container wrote to its terminationMessagePath (the kubelet's termination message), "" if nothing. */
  terminationMessage(): Promise<string>;
}

/** Kubernetes' $(VAR) expansion of command/args with the container's env; $$(VAR) escapes. */
export function expandKubernetesVars(text: string, env: Record<string, string>): string {
  return text.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (match, name: string | undefined) => {
    if (match === "$$") return "$";
    return name !== undefined && name in env ? env[name]! : match;
  });
}

function containerEnv(container: Container, objects: readonly K8sObject[], namespace: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const entry of container.env ?? []) {
    // Kubernetes expands $(VAR) in env values with the entries defined before this one.
    if (entry.value !== undefined) {
      env[entry.name] = expandKubernetesVars(entry.value, env);
      continue;
    }
    const ref = entry.valueFrom?.secretKeyRef ?? entry.valueFrom?.configMapKeyRef;
    if (entry.valueFrom === undefined) {
      env[entry.name] = "";
      continue;
    }
    if (ref === undefined) throw new Error(`container ${container.name}: env ${entry.name} uses valueFrom ${Object.keys(entry.valueFrom).join(",")}, not supported by the harness`);
    const kind = entry.valueFrom.secretKeyRef ? "Secret" : "ConfigMap";
    const name = required(ref.name, `container ${container.name}: env ${entry.name} ${kind} name`);
    const object = findObject(objects, kind, namespace, name);
    const value = object === undefined ? undefined : objectContent(object).get(ref.key);
    if (value === undefined) {
      if (ref.optional === true) continue;
      if (object === undefined) throw missingObjectError(objects, kind, namespace, name, `env ${entry.name}`);
      throw new Error(`${kind} ${namespace}/${name} has no key ${JSON.stringify(ref.key)} (used by env ${entry.name})`);
    }
    env[entry.name] = value.toString("utf8");
  }
  return env;
}

/** Rewrites listen/dial addresses on mapped container ports; refuses 0.0.0.0 on an unmapped one. */
function portRewriter(ports: Record<number, number>, containerName: string): (arg: string) => string {
  const pattern = /(?<![\w.])(0\.0\.0\.0|127\.0\.0\.1|localhost|\[::\]):(\d+)(?!\d)/g;
  return (arg) =>
    arg.replace(pattern, (match, host: string, port: string) => {
      const local = ports[Number(port)];
      if (local !== undefined) return `127.0.0.1:${local}`;
      if (host === "0.0.0.0" || host === "[::]") {
        throw new Error(`container ${containerName}: argument ${JSON.stringify(arg)} listens on ${match}, a fixed port; map port ${port} in \`ports\``);
      }
      return match;
    });
}

// Flags whose value is a file or directory (--cacert, --key-file, --data-dir, ...). A path there
// that no volume provides would make the process read or write this machine's real filesystem.
const PATH_FLAG = /^--?[A-Za-z0-9-]*(?:file|dir|path|cert|key|ca)$/i;

interface PathMapping {
  containerPath: string;
  localPath: string;
  /** Content comes from the hook's objects, so a named file must exist. */
  mustExist: boolean;
}

function pathsInFlagValues(args: readonly string[]): Array<{ arg: string; value: string }> {
  const found: Array<{ arg: string; value: string }> = [];
  args.forEach((arg, i) => {
    const eq = arg.indexOf("=");
    const flag = eq === -1 ? arg : arg.slice(0, eq);
    if (!PATH_FLAG.test(flag)) return;
    const value = eq === -1 ? (args[i + 1]?.startsWith("-") === false ? args[i + 1] : undefined) : arg.slice(eq + 1);
    for (const part of (value ?? "").split(",")) if (part.startsWith("/")) found.push({ arg: eq === -1 ? `${arg} ${value}` : arg, value: part });
  });
  return found;
}

function containerPathsIn(arg: string, mappings: readonly PathMapping[]): Array<{ path: string; mapping: PathMapping }> {
  const found: Array<{ path: string; mapping: PathMapping }> = [];
  const sorted = [...mappings].sort((a, b) => b.containerPath.length - a.containerPath.length);
  if (sorted.length === 0) return found;
  const pattern = new RegExp(`${PATH_START}((${sorted.map((m) => escapeRegExp(m.containerPath)).join("|")})${PATH_END}[^\\s,:;"')]*)`, "g");
  for (const match of arg.matchAll(pattern)) {
    const mapping = sorted.find((m) => m.containerPath === match[3]);
    if (mapping !== undefined) found.push({ path: match[2]!, mapping });
  }
  return found;
}

async function checkPaths(container: Container, argv: readonly string[], mappings: readonly PathMapping[]): Promise<void> {
  for (const { arg, value } of pathsInFlagValues(argv)) {
    const covered = mappings.some((m) => value === m.containerPath || value.startsWith(`${m.containerPath}/`));
    if (!covered) {
      throw new Error(`container ${container.name}: argument ${JSON.stringify(arg)} names ${value}, which is under no volumeMount (mounts: ${mappings.map((m) => m.containerPath).join(", ") || "<none>"})`);
    }
  }
  for (const arg of argv) {
    for (const { path: containerPath, mapping } of containerPathsIn(arg, mappings)) {
      if (!mapping.mustExist) continue;
      const local = mapping.localPath + containerPath.slice(mapping.containerPath.length);
      const exists = await stat(local).then(() => true, () => false);
      if (!exists) throw new Error(`container ${container.name}: argument ${JSON.stringify(arg)} names ${containerPath}, which the materialized volume at ${mapping.containerPath} does not contain`);
    }
  }
}

/**
 * Runs one container of a pod spec as a local process: its exact command and args, with only the
 * executable (through `binaries`), mount paths (to `dir/root/...`) and listen ports (through
 * `ports`) rewritten, and its env set. Throws before starting when a Secret/ConfigMap/key is
 * missing or an argument names a file its volumes do not provide.
 */
export async function runContainer(options: RunContainerOptions): Promise<RunningContainer> {
  const { podSpec, containerName, namespace, objects, dir } = options;
  const all = [...podSpec.containers, ...(podSpec.initContainers ?? [])];
  const container = all.find((c) => c.name === containerName);
  if (container === undefined) throw new Error(`no container ${containerName} in pod spec (has: ${all.map((c) => c.name).join(", ")})`);
  const command = container.command ?? options.image?.command ?? [];
  if (command.length === 0) throw new Error(`container ${containerName} has no command; the harness cannot know the image's entrypoint`);

  const rootDir = path.join(dir, "root");
  const volumes = await materializeVolumes(podSpec, container, objects, rootDir, namespace, options.claims, options.kubernetes?.tokens);
  const kubernetesService: Record<string, string> = options.kubernetes ? { KUBERNETES_SERVICE_HOST: options.kubernetes.host, KUBERNETES_SERVICE_PORT: String(options.kubernetes.port) } : {};
  const env = { ...kubernetesService, ...containerEnv(container, objects, namespace) };

  // The kubelet gives every container a file at terminationMessagePath and reads it once the
  // container ends (at most 4096 bytes): here a file of the pod's directory.
  const terminationPath = typeof container.terminationMessagePath === "string" ? container.terminationMessagePath : "/dev/termination-log";
  const terminationLog = path.join(dir, "termination-log");
  await mkdir(dir, { recursive: true });
  await writeFile(terminationLog, "");
  const extra = [...Object.entries(options.extraPaths ?? {}), [terminationPath, terminationLog] as const];
  const mappings: PathMapping[] = [
    ...volumes.mounts.map((m) => ({ containerPath: m.mountPath, localPath: m.localPath, mustExist: m.volumeKind !== "emptyDir" && m.volumeKind !== "persistentVolumeClaim" })),
    ...extra.map(([containerPath, localPath]) => ({ containerPath, localPath, mustExist: false })),
  ];
  const rewriteBinaries = prefixReplacer(Object.entries(options.binaries));
  const rewritePaths = prefixReplacer(mappings.map((m) => [m.containerPath, m.localPath] as const));
  const rewritePorts = portRewriter(options.ports, containerName);

  const expanded = [...command, ...(container.args ?? [])].map((a) => expandKubernetesVars(a, env));
  const [containerExecutable, ...containerArgs] = expanded as [string, ...string[]];
  // The image's compiled gateway (dist/, test/support/build.ts): built first when a source is newer.
  if (containerArgs.some((arg) => /^(\/app\/)?dist\//.test(arg))) ensureBuilt();
  await checkPaths(container, containerArgs, mappings);

  const executable = options.binaries[containerExecutable] ?? containerExecutable;
  await assertExecutable(executable, `container ${containerName} runs ${containerExecutable}; map it in \`binaries\``);
  // Binary paths are rewritten inside args too, for `sh -c "/usr/local/bin/etcdctl ..."` Jobs.
  const args = containerArgs.map((a) => rewritePorts(rewritePaths(rewriteBinaries(a))));
  const workingDir = container.workingDir ?? options.image?.workingDir;
  const cwd = workingDir ? rewritePaths(workingDir) : path.join(dir, "cwd");
  await mkdir(cwd, { recursive: true });

  // The container's env plus PATH only: the developer's environment must not leak in.
  const proc = spawnManaged(executable, args, { cwd, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env } });
  const rewritePath = (text: string): string => rewritePaths(text);
  const terminationMessage = async (): Promise<string> => (await readFile(terminationLog, "utf8")).slice(0, 4096);
  return { ...proc, args, executable, mounts: volumes.mounts, rewritePath, terminationMessage };
}

// ---------------------------------------------------------------------------------------------
// HTTP probes
// ---------------------------------------------------------------------------------------------

export interface HttpResponse {
  status: number;
  body: string;
}

/** Plain-HTTP GET (kubelet-style probe). Rejects on connection errors or after `timeoutMs`. */
export function httpGet(url: string, timeoutMs = 5_000): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { timeout: timeoutMs, agent: false }, (response) => {
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => (body += chunk));
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
      response.on("error", reject);
    });
    request.on("timeout", () => request.destroy(new Error(`GET ${url}: no answer within ${timeoutMs} ms`)));
    request.on("error", reject);
  });
}
