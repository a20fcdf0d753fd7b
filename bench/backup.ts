// `npm run bench` (alone: `node bench/backup.ts`): backup and restore of one tenant (gateway/backup/),
// and what a running backup costs the tenant's own calls. On one fresh core etcd 3.6 (TLS), two
// tenants of 256 MiB each are written straight into core etcd (one of 2 KiB objects, one of 64 KiB);
// each is backed up and restored into an empty prefix with the programs as a Job runs them
// (`node gateway/backup/main.ts`, a new process each, its start-up included), the default read
// budget (64 MiB). Then the 64 KiB tenant, served by its gateway (from the Deployment the sync hook
// returns), takes a steady load of gets and puts of 1 KiB objects at a fixed rate, first alone,
// then while backups of it run back to back: the latency percentiles side by side.
// Prints a table and writes it to bench/RESULTS-backup.md.
// Environment: BENCH_BACKUP_MIB (default 256) per tenant, BENCH_BACKUP_LOAD_SECONDS (default 15)
// per load phase, BENCH_BACKUP_RATE (default 100) calls a second.
import { writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { spawnManaged, startCoreEtcd, stopAll, tempDir, type CoreEtcd } from "../test/e2e/harness.ts";
import { connectTenant, startTenant } from "../test/e2e/tenant.ts";
import { connect, type EtcdClient } from "../test/support/etcd-client.ts";
import { testConfig } from "../test/support/requests.ts";

const MiB = 1024 * 1024;
const TENANT_MIB = Number(process.env.BENCH_BACKUP_MIB ?? 256);
const LOAD_SECONDS = Number(process.env.BENCH_BACKUP_LOAD_SECONDS ?? 15);
const RATE = Number(process.env.BENCH_BACKUP_RATE ?? 100);
const REPO = fileURLToPath(new URL("../", import.meta.url));
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
}

/** One run of the program, as a Job's container runs it; its wall time. */
async function program(args: string[]): Promise<Run> {
  const started = performance.now();
  const child = spawnManaged(process.execPath, ["gateway/backup/main.ts", ...args], { cwd: REPO, env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } });
  const { code } = await child.exited;
  const seconds = (performance.now() - started) / 1000;
  if (code !== 0) throw new Error(`${args[0]} exited ${code}: ${child.stderr()}`);
  return { seconds, summary: JSON.parse(child.stdout().trim().split("\n").at(-1)!) as Record<string, unknown> };
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
  return { gets, puts, failed, slowest, seconds: (performance.now() - started) / 1000 };
}

const dir = await tempDir("bench-backup-");
const core = await startCoreEtcd(dir, { extraFlags: [`--quota-backend-bytes=${8 * 1024 * MiB}`] });
const client = connect(core.endpoint, core.tls);
const throughput: string[] = [];
try {
  for (const size of (process.env.BENCH_BACKUP_SIZES ?? SIZES.join(",")).split(",").map(Number)) {
    const tenant = `t${size / 1024}k`;
    const filled = performance.now();
    const keys = await fill(client, tenant, size, TENANT_MIB * MiB);
    console.log(`${tenant}: ${keys} keys of ${size / 1024} KiB written in ${((performance.now() - filled) / 1000).toFixed(1)} s`);
    const file = path.join(dir, `${tenant}.etcdbackup`);
    const backup = await program(["backup", ...coreFlags(core, tenant), `--out=${file}`]);
    const bytes = Number(backup.summary.bytes);
    const restore = await program(["restore", ...coreFlags(core, `${tenant}-copy`), `--in=${file}`, `--quota-bytes=${2 * TENANT_MIB * MiB}`]);
    for (const [what, run] of [["backup", backup], ["restore", restore]] as const) {
      const line = `| ${what} | ${size / 1024} KiB | ${keys} | ${(bytes / MiB).toFixed(0)} | ${run.seconds.toFixed(1)} | ${(bytes / MiB / run.seconds).toFixed(1)} | ${Math.round(keys / run.seconds)} |`;
      console.log(line);
      throughput.push(line);
    }
    // The restored copy is no longer needed: core etcd's memory and disk stay those of the bench.
    await client.kv.deleteRange({ key: prefixOf(`${tenant}-copy`), range_end: prefixOf(`${tenant}-copy`).slice(0, -1) + "0" });
  }

  // The 64 KiB tenant served by its gateway: its own calls alone, then with backups of it running
  // (each some seconds long, so that several run in one phase).
  const config = testConfig({ CORE_ETCD_ENDPOINTS: core.endpoint });
  const quota = { storage: "1Gi", writeBytesPerSecond: "16Mi", requestsPerSecond: 100000 };
  const served = await startTenant(config, core, "t64k", { clientCertSecret: [{ name: "etcd-client", namespace: "bench-system" }], replicas: 1, quota }, path.join(dir, "t64k"));
  const tenantClient = await connectTenant(served);
  console.log("t64k served by its gateway; load alone");
  await load(tenantClient, 2); // warm-up
  const alone = await load(tenantClient, LOAD_SECONDS);
  console.log(`alone: ${alone.gets.length + alone.puts.length} calls, ${alone.failed} failed; load with backups running`);
  let backingUp = true;
  let backups = 0;
  const backupSeconds: number[] = [];
  const loop = (async () => {
    while (backingUp) {
      const run = await program(["backup", ...coreFlags(core, "t64k"), `--out=${path.join(dir, `t64k-under-load-${backups}.etcdbackup`)}`]);
      backupSeconds.push(run.seconds);
      backups++;
    }
  })();
  // Until the time is up and one backup completed under load.
  const during = await load(tenantClient, LOAD_SECONDS, () => backups === 0);
  backingUp = false;
  await loop;
  console.log(`with backups: ${during.gets.length + during.puts.length} calls, ${during.failed} failed`);
  tenantClient.close();

  const row = (what: string, r: Awaited<ReturnType<typeof load>>) =>
    `| ${what} | ${r.gets.length + r.puts.length} | ${r.failed} | ${pct(r.gets, 50).toFixed(2)} | ${pct(r.gets, 99).toFixed(2)} | ${pct(r.puts, 50).toFixed(2)} | ${pct(r.puts, 99).toFixed(2)} | ${r.slowest.toFixed(0)} |`;
  const report = [
    "# Backup and restore of one tenant",
    "",
    `\`node bench/backup.ts\` on ${os.cpus().length} cores (${os.cpus()[0]?.model ?? "unknown CPU"}), shared; core etcd ${core.release.version} with TLS, one member; ${new Date().toISOString().slice(0, 10)}.`,
    "Each run is the program as a Job runs it (`node gateway/backup/main.ts`, a new process, its start-up included), the default read budget of 64 MiB; the restore goes into an empty prefix of core etcd.",
    "",
    "| | objects | keys | MiB | seconds | MiB/s | keys/s |",
    "|---|---|---|---|---|---|---|",
    ...throughput,
    "",
    `The tenant of 64 KiB objects served by its gateway: ${RATE} calls a second (half gets, half puts of 1 KiB objects) for ${LOAD_SECONDS} s alone, then as long again while backups of the same tenant ran back to back (${backups} backups of its ${TENANT_MIB} MiB of ${(backupSeconds.reduce((a, b) => a + b, 0) / Math.max(1, backups)).toFixed(1)} s on average). Latency in ms, through the gateway; a failed call (its deadline of 10 s passed) is counted apart:`,
    "",
    "| | calls | failed | get p50 | get p99 | put p50 | put p99 | slowest |",
    "|---|---|---|---|---|---|---|---|",
    row("no backup", alone),
    row("backup running", during),
    "",
  ].join("\n");
  console.log(report);
  await writeFile(OUT, report);
} finally {
  client.close();
  await stopAll();
}
