// `npm run bench` (alone: `node bench/backup.ts`): backup and restore of one tenant (gateway/backup/),
// and what a running backup costs the tenant's own calls. On one fresh core etcd 3.6 (TLS), two
// tenants of 256 MiB each are written straight into core etcd (one of 2 KiB objects, one of 64 KiB);
// each is backed up and restored into an empty prefix by the program (`node dist/gateway/backup/main.js`,
// a new process each, its start-up included), the default read budget (64 MiB). Then each tenant,
// served by its gateway (from the Deployment the sync hook returns), takes a steady load of gets
// and puts of 1 KiB objects at a fixed rate, first alone, then while backups of it run back to
// back: the latency percentiles side by side. Beside each measurement, the machine's load average
// (1 minute) before and after it: the machine may be shared.
// Prints a table and writes it to bench/RESULTS-backup.md.
// Environment: BENCH_BACKUP_MIB (default 256) per tenant, BENCH_BACKUP_LOAD_SECONDS (default 15)
// per load phase, BENCH_BACKUP_RATE (default 100) calls a second, BENCH_BACKUP_SIZES (default
// 2048,65536) the objects' sizes; BENCH_BACKUP_UNDER_LOAD_DIR where the backups under load are
// written (default: beside core etcd's data, on its disk; /dev/shm leaves that disk to etcd);
// BENCH_BACKUP_REPO another checkout whose dist/gateway/backup/main.js is run instead (build it there first) (the report is
// then printed, not written), to compare two versions on one machine.
import { rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { spawnManaged, startCoreEtcd, stopAll, tempDir, type CoreEtcd } from "../test/e2e/harness.ts";
import { connectTenant, startTenant } from "../test/e2e/tenant.ts";
import { ensureBuilt } from "../test/support/build.ts";
import { connect, type EtcdClient } from "../test/support/etcd-client.ts";
import { testConfig } from "../test/support/requests.ts";

const MiB = 1024 * 1024;
const TENANT_MIB = Number(process.env.BENCH_BACKUP_MIB ?? 256);
const LOAD_SECONDS = Number(process.env.BENCH_BACKUP_LOAD_SECONDS ?? 15);
const RATE = Number(process.env.BENCH_BACKUP_RATE ?? 100);
const REPO = fileURLToPath(new URL("../", import.meta.url));
const PROGRAM_REPO = process.env.BENCH_BACKUP_REPO ?? REPO;
// The program as the image runs it, compiled; another checkout's is built there by whoever names it.
if (PROGRAM_REPO === REPO) ensureBuilt();
const OUT = fileURLToPath(new URL("./RESULTS-backup.md", import.meta.url));
const SIZES = [2 * 1024, 64 * 1024];

const prefixOf = (tenant: string) => `/etcdstorage/${tenant}/`;

/** `bytes` of objects of `size` under the tenant's prefix, straight into core etcd, in Txns of up to 1 MiB. */
async function fill(client: EtcdClient, tenant: string, size: number, bytes: number): Promise<number> {
  const count = Math.floor(bytes / size);
  const perTxn = Math.max(1, Math.min(128, Math.floor(MiB / size)));
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const first = next;
      next = Math.min(count, next + perTxn);
      const success = [];
      for (let i = first; i < next; i++) success.push({ request_put: { key: `${prefixOf(tenant)}registry/objects/ns-${i % 16}/o-${String(i).padStart(7, "0")}`, value: Buffer.alloc(size, i % 251) } });
      await client.kv.txn({ success });
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  return count;
}

interface Run {
  seconds: number;
  summary: Record<string, unknown>;
  /** The machine's load average (1 minute) before and after the run. */
  load: string;
}

const loadAverage = () => os.loadavg()[0]!.toFixed(1);

/** One run of the program, as a Job's container runs it; its wall time. */
async function program(args: string[]): Promise<Run> {
  const loadBefore = loadAverage();
  const started = performance.now();
  const child = spawnManaged(process.execPath, ["dist/gateway/backup/main.js", ...args], { cwd: PROGRAM_REPO, env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } });
  const { code } = await child.exited;
  const seconds = (performance.now() - started) / 1000;
  if (code !== 0) throw new Error(`${args[0]} exited ${code}: ${child.stderr()}`);
  return { seconds, summary: JSON.parse(child.stdout().trim().split("\n").at(-1)!) as Record<string, unknown>, load: `${loadBefore} → ${loadAverage()}` };
}

const coreFlags = (core: CoreEtcd, tenant: string) => [`--tenant=${tenant}`, `--prefix=${prefixOf(tenant)}`, `--endpoints=${core.endpoint}`, `--cacert=${core.caFile}`, `--cert=${core.certFile}`, `--key=${core.keyFile}`];

function pct(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}

/** Gets and puts of 1 KiB objects at RATE a second (half each), each call timed; until `until()` is false and `seconds` passed. */
async function load(client: EtcdClient, seconds: number, busy: () => boolean = () => false) {
  const gets: number[] = [];
  const puts: number[] = [];
  // A call that failed (its deadline of 10 s passed, or an error): counted, its latency left out.
  let failed = 0;
  let slowest = 0;
  const loadBefore = loadAverage();
  const started = performance.now();
  const value = Buffer.alloc(1024, "v");
  const pending: Promise<void>[] = [];
  for (let n = 0; (performance.now() - started) / 1000 < seconds || busy(); n++) {
    const due = started + (n * 1000) / RATE;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const key = `/registry/load/l-${n % 500}`;
    const t0 = performance.now();
    const call = n % 2 === 0 ? client.kv.put({ key, value }).then(() => puts.push(performance.now() - t0)) : client.kv.range({ key }).then(() => gets.push(performance.now() - t0));
    pending.push(
      call.then(
        () => {
          slowest = Math.max(slowest, performance.now() - t0);
        },
        () => {
          failed++;
        },
      ),
    );
  }
  await Promise.all(pending);
  return { gets, puts, failed, slowest, seconds: (performance.now() - started) / 1000, load: `${loadBefore} → ${loadAverage()}` };
}

const dir = await tempDir("bench-backup-");
const BACKUPS_UNDER_LOAD_DIR = process.env.BENCH_BACKUP_UNDER_LOAD_DIR ?? dir;
const core = await startCoreEtcd(dir, { extraFlags: [`--quota-backend-bytes=${8 * 1024 * MiB}`] });
const client = connect(core.endpoint, core.tls);
const throughput: string[] = [];
const sizes = (process.env.BENCH_BACKUP_SIZES ?? SIZES.join(",")).split(",").map(Number);
const underLoad: string[] = [];
try {
  for (const size of sizes) {
    const tenant = `t${size / 1024}k`;
    const filled = performance.now();
    const keys = await fill(client, tenant, size, TENANT_MIB * MiB);
    console.log(`${tenant}: ${keys} keys of ${size / 1024} KiB written in ${((performance.now() - filled) / 1000).toFixed(1)} s`);
    const file = path.join(dir, `${tenant}.etcdbackup`);
    const backup = await program(["backup", ...coreFlags(core, tenant), `--out=${file}`]);
    const bytes = Number(backup.summary.bytes);
    const restore = await program(["restore", ...coreFlags(core, `${tenant}-copy`), `--in=${file}`, `--quota-bytes=${2 * TENANT_MIB * MiB}`]);
    for (const [what, run] of [["backup", backup], ["restore", restore]] as const) {
      const pages = what === "backup" ? String(run.summary.pages) : "";
      const line = `| ${what} | ${size / 1024} KiB | ${keys} | ${(bytes / MiB).toFixed(0)} | ${pages} | ${run.seconds.toFixed(1)} | ${(bytes / MiB / run.seconds).toFixed(1)} | ${Math.round(keys / run.seconds)} | ${run.load} |`;
      console.log(line);
      throughput.push(line);
    }
    // The restored copy is no longer needed: core etcd's memory and disk stay those of the bench.
    await client.kv.deleteRange({ key: prefixOf(`${tenant}-copy`), range_end: prefixOf(`${tenant}-copy`).slice(0, -1) + "0" });
  }

  // Each tenant served by its gateway: its own calls alone, then with backups of it running back
  // to back (each some seconds long, so that several run in one phase).
  const config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
  const quota = { storage: "1Gi", writeBytesPerSecond: "16Mi", requestsPerSecond: 100000 };
  const row = (what: string, r: Awaited<ReturnType<typeof load>>) =>
    `| ${what} | ${r.gets.length + r.puts.length} | ${r.failed} | ${pct(r.gets, 50).toFixed(2)} | ${pct(r.gets, 99).toFixed(2)} | ${pct(r.puts, 50).toFixed(2)} | ${pct(r.puts, 99).toFixed(2)} | ${r.slowest.toFixed(0)} | ${r.load} |`;
  for (const size of sizes) {
    const tenant = `t${size / 1024}k`;
    const served = await startTenant(config, core, tenant, { clientCertSecret: [{ name: "etcd-client", namespace: "bench-system" }], replicas: 1, quota }, path.join(dir, tenant));
    const tenantClient = await connectTenant(served);
    console.log(`${tenant} served by its gateway; load alone`);
    await load(tenantClient, 2); // warm-up
    const alone = await load(tenantClient, LOAD_SECONDS);
    console.log(`alone: ${alone.gets.length + alone.puts.length} calls, ${alone.failed} failed; load with backups running`);
    let backingUp = true;
    const backupSeconds: number[] = [];
    const loop = (async () => {
      while (backingUp) {
        const out = path.join(BACKUPS_UNDER_LOAD_DIR, `${tenant}-under-load-${backupSeconds.length}.etcdbackup`);
        const run = await program(["backup", ...coreFlags(core, tenant), `--out=${out}`]);
        backupSeconds.push(run.seconds);
        await rm(out);
      }
    })();
    // Until the time is up and one backup completed under load.
    const during = await load(tenantClient, LOAD_SECONDS, () => backupSeconds.length === 0);
    backingUp = false;
    await loop;
    console.log(`with backups: ${during.gets.length + during.puts.length} calls, ${during.failed} failed`);
    tenantClient.close();
    const average = backupSeconds.reduce((a, b) => a + b, 0) / backupSeconds.length;
    underLoad.push(row(`${size / 1024} KiB objects, no backup`, alone), row(`${size / 1024} KiB objects, backups running (${backupSeconds.length}, ${average.toFixed(1)} s each)`, during));
  }

  const report = [
    "# Backup and restore of one tenant",
    "",
    `\`node bench/backup.ts\` on ${os.cpus().length} cores (${os.cpus()[0]?.model ?? "unknown CPU"}), shared; core etcd ${core.release.version} with TLS, one member; ${new Date().toISOString().slice(0, 10)}.`,
    "Each run is the program (`node dist/gateway/backup/main.js`, a new process, its start-up included), the default read budget of 64 MiB; the restore goes into an empty prefix of core etcd. Load: the machine's load average (1 minute) before and after each measurement.",
    "",
    "| | objects | keys | MiB | pages | seconds | MiB/s | keys/s | load |",
    "|---|---|---|---|---|---|---|---|---|",
    ...throughput,
    "",
    `Each tenant served by its gateway: ${RATE} calls a second (half gets, half puts of 1 KiB objects) for ${LOAD_SECONDS} s alone, then as long again while backups of the same tenant (its ${TENANT_MIB} MiB) ran back to back, their files written ${BACKUPS_UNDER_LOAD_DIR === dir ? "on core etcd's disk" : `to ${BACKUPS_UNDER_LOAD_DIR}`}. Latency in ms, through the gateway; a failed call (its deadline of 10 s passed) is counted apart:`,
    "",
    "| | calls | failed | get p50 | get p99 | put p50 | put p99 | slowest | load |",
    "|---|---|---|---|---|---|---|---|---|",
    ...underLoad,
    "",
  ].join("\n");
  console.log(report);
  if (PROGRAM_REPO === REPO) await writeFile(OUT, report);
} finally {
  client.close();
  await stopAll();
}
