// Backup, restore and verify of one tenant, run from the project's image with the core
// credentials (README: "Backup format"); the run of a schedule, and the deletion of a backup's file:
//
//   node dist/gateway/backup/main.js backup   --tenant=a --prefix=/etcdstorage/a/ --endpoints=... --cacert=... --cert=... --key=... --out=FILE
//   node dist/gateway/backup/main.js restore  --tenant=b --prefix=/etcdstorage/b/ --endpoints=... ... --in=FILE --quota-bytes=N
//   node dist/gateway/backup/main.js verify   --in=FILE [--list]
//   node dist/gateway/backup/main.js schedule --tenant=a --volume-claim=C --keep=N --kube-ca-file=... --token-file=...   (no core credentials: schedule.ts)
//   node dist/gateway/backup/main.js delete   --file=FILE
//
// Success prints one JSON line (verify: the header, each key with --list, the summary) and exits
// 0. Exit 1: failed, and a retry may succeed (core etcd unreachable, a revision compacted, a
// restore that failed midway and emptied the prefix again); 2: a bad setting, named; 3: refused,
// and a retry cannot succeed (a defective file, a restore over the quota or into a non-empty
// prefix). Messages are one line on stderr and never hold a key or a value. With --result-file, the
// outcome is written there too as one JSON line: the summary, or the failure's reason, exit code
// and message (a Job points it at its termination message, which the Pod's status then carries).
import { constants, createReadStream, writeFileSync } from "node:fs";
import { access, open, rm } from "node:fs/promises";
import { setTimeout as wait } from "node:timers/promises";
import path from "node:path";
import { CoreConnection } from "../core/upstream.ts";
import { TenantKeyspace } from "../keys.ts";
import { loadSide } from "../shell/tls.ts";
import { backup } from "./backup.ts";
import { TenantCalls } from "./calls.ts";
import { ConfigError, parseCommandLine, type CoreSettings, type Settings } from "./flags.ts";
import { BackupDefect, verifyBackup, type BackupEntry } from "./format.ts";
import { asFailure } from "./failure.ts";
import { restore } from "./restore.ts";
import { KubeApi } from "./kube-api.ts";
import { runSchedule } from "./schedule.ts";

const EXIT = { ok: 0, failed: 1, badSetting: 2, refused: 3 } as const;

function fail(code: number, line: string): never {
  process.stderr.write(`${line.replace(/\s*\n\s*/g, " ")}\n`);
  process.exit(code);
}

async function configure(): Promise<Settings> {
  try {
    const settings = parseCommandLine(process.argv.slice(2));
    if (settings.command === "backup") await writableDirectory("--out", settings.out);
    if (settings.command === "restore" || settings.command === "verify") await readable("--in", settings.in);
    return settings;
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    fail(EXIT.badSetting, `invalid configuration: ${error.message}`);
  }
}

async function readable(flag: string, file: string): Promise<void> {
  try {
    await (await open(file, "r")).close();
  } catch (error) {
    throw new ConfigError(flag, `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}

async function writableDirectory(flag: string, file: string): Promise<void> {
  try {
    await access(path.dirname(file), constants.W_OK);
  } catch (error) {
    throw new ConfigError(flag, `cannot write into ${path.dirname(file)}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  const taken = await access(file).then(() => true, () => false);
  if (taken) throw new ConfigError(flag, `${file} exists; a backup never overwrites one`);
}

/** The connection to core etcd; warnings (an endpoint failed over) as JSON lines on stderr. */
function connect(settings: CoreSettings): { calls: TenantCalls; core: CoreConnection } {
  let tls;
  try {
    tls = loadSide({ ...settings, certFile: "", keyFile: "", trustedCaFile: "" }, "core");
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    fail(EXIT.badSetting, `invalid configuration: ${error.message}`);
  }
  const quiet = () => {};
  const warn = (fields: Record<string, unknown> | string, msg?: string) => {
    process.stderr.write(`${JSON.stringify(typeof fields === "string" ? { level: "warn", msg: fields } : { level: "warn", ...fields, msg })}\n`);
  };
  // The connection logs through the gateway's logger, and calls these six levels of it.
  const log = { trace: quiet, debug: quiet, info: quiet, warn, error: warn, fatal: warn } as unknown as ConstructorParameters<typeof CoreConnection>[2];
  const core = new CoreConnection(settings.endpoints, tls, log);
  return { core, calls: new TenantCalls(core, new TenantKeyspace(settings.prefix)) };
}

/** A key for --list: as a string when it is UTF-8, else in base64. */
function listed(entry: Extract<BackupEntry, { kind: "key" }>, ttls: Map<number, number>): Record<string, unknown> {
  let key: Record<string, string>;
  try {
    key = { key: new TextDecoder("utf-8", { fatal: true }).decode(entry.key) };
  } catch {
    key = { keyBase64: entry.key.toString("base64") };
  }
  return { ...key, valueBytes: entry.value.length, ...(entry.lease !== 0 ? { lease: entry.lease, ttl: ttls.get(entry.lease) } : {}) };
}

async function verify(file: string, list: boolean): Promise<void> {
  const ttls = new Map<number, number>();
  const print = (value: unknown) => process.stdout.write(`${JSON.stringify(value)}\n`);
  try {
    const { trailer } = await verifyBackup(createReadStream(file, { highWaterMark: 1024 * 1024 }), (entry) => {
      if (entry.kind === "header") print({ header: entry.header });
      else if (entry.kind === "lease") ttls.set(entry.number, entry.ttl);
      else if (entry.kind === "key" && list) print(listed(entry, ttls));
    });
    print({ verified: true, file, ...trailer });
  } catch (error) {
    if (error instanceof BackupDefect) fail(EXIT.refused, `verify: ${file}: ${error.message}`);
    throw error;
  }
}

/** Writes the outcome to --result-file too; a file that cannot be written is said on stderr, the outcome stands. */
function record(settings: { resultFile?: string }, outcome: Record<string, unknown>): void {
  if (settings.resultFile === undefined) return;
  try {
    writeFileSync(settings.resultFile, `${JSON.stringify(outcome)}\n`);
  } catch (error) {
    process.stderr.write(`--result-file: cannot write ${settings.resultFile}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}\n`);
  }
}

/** The backup file and what a backup that stopped midway left of it (backup.ts writes <file>.partial first). */
async function deleteBackupFile(file: string): Promise<void> {
  for (const name of [file, `${file}.partial`]) await rm(name, { force: true });
  process.stdout.write(`${JSON.stringify({ deleted: true, file })}\n`);
}

/** One scheduled run; its outcome is printed and recorded like a backup's. */
async function schedule(settings: Extract<Settings, { command: "schedule" }>): Promise<number> {
  let api: KubeApi;
  try {
    api = KubeApi.inCluster(process.env, settings.kubeCaFile, settings.tokenFile);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    fail(EXIT.badSetting, `invalid configuration: ${error.message}`);
  }
  try {
    const outcome = { scheduled: true, ...(await runSchedule(api, { ...settings, pollMs: settings.pollSeconds * 1000 }, () => new Date(), wait)) };
    record(settings, outcome);
    process.stdout.write(`${JSON.stringify(outcome)}\n`);
    return EXIT.ok;
  } catch (error) {
    const failure = asFailure(error, "schedule");
    record(settings, { failed: true, reason: failure.reason, exitCode: failure.exitCode, message: failure.message });
    process.stderr.write(`${failure.message.replace(/\s*\n\s*/g, " ")}\n`);
    return failure.exitCode;
  } finally {
    api.close();
  }
}

const settings = await configure();
if (settings.command === "verify") {
  await verify(settings.in, settings.list);
  process.exit(EXIT.ok);
}
if (settings.command === "delete") {
  await deleteBackupFile(settings.file);
  process.exit(EXIT.ok);
}
if (settings.command === "schedule") process.exit(await schedule(settings));
const { core, calls } = connect(settings);
let exitCode: number = EXIT.ok;
try {
  const summary =
    settings.command === "backup"
      ? await backup(calls, { tenant: settings.tenant, prefix: settings.prefix, out: settings.out, readBudgetBytes: settings.readBudgetBytes })
      : await restore(calls, settings.tenant, { in: settings.in, quotaBytes: settings.quotaBytes, cleanupTimeoutSeconds: settings.cleanupTimeoutSeconds });
  const outcome = { [settings.command === "backup" ? "backedUp" : "restored"]: true, ...summary };
  record(settings, outcome);
  process.stdout.write(`${JSON.stringify(outcome)}\n`);
} catch (error) {
  const failure = asFailure(error, settings.command);
  exitCode = failure.exitCode;
  record(settings, { failed: true, reason: failure.reason, exitCode, message: failure.message });
  process.stderr.write(`${failure.message.replace(/\s*\n\s*/g, " ")}\n`);
} finally {
  core.close();
}
process.exit(exitCode);
