// The command line of backup, restore and verify, in the gateway's style: a command, then
// --flag=value settings with etcd's names for core etcd (--endpoints, --cacert, --cert, --key, as
// etcdctl). A bad one stops the program with exit code 2 and one line naming the setting
// (ConfigError, as gateway/shell/config.ts).
import { ConfigError, parseEndpoints } from "../shell/config.ts";
import { TenantKeyspace } from "../keys.ts";

export { ConfigError };

export const COMMANDS = ["backup", "restore", "verify"] as const;
export type Command = (typeof COMMANDS)[number];

const MiB = 1024 * 1024;

interface FlagSpec {
  required?: true;
  default?: string;
  help: string;
}

const CORE: Record<string, FlagSpec> = {
  "--tenant": { required: true, help: "the EtcdStorage's name" },
  "--prefix": { required: true, help: "the tenant's key prefix in core etcd, e.g. /etcdstorage/<name>/" },
  "--endpoints": { required: true, help: "comma-separated https:// URLs of core etcd" },
  "--cacert": { required: true, help: "CA bundle of core etcd" },
  "--cert": { required: true, help: "the client certificate for core etcd" },
  "--key": { required: true, help: "its private key" },
  "--result-file": { default: "-", help: "where to write the outcome as one JSON line too, e.g. a Job's /dev/termination-log (-: nowhere)" },
};

const FLAGS: Record<Command, Record<string, FlagSpec>> = {
  backup: {
    ...CORE,
    "--out": { help: "the backup file to write (written as <file>.partial, then renamed; never overwritten); or --out-dir" },
    "--out-dir": { help: "a directory to write the backup into, named <tenant>.<UTC time>.etcdbackup so that names sort by time (a schedule's); or --out" },
    "--keep": { help: "with --out-dir: once the new backup is complete, delete the tenant's older <tenant>.<UTC time>.etcdbackup files there but the newest N (the new one included); nothing else is ever deleted" },
    "--read-budget-bytes": { default: String(64 * MiB), help: "what one page may make core etcd build in memory (the gateway's read budget)" },
  },
  restore: {
    ...CORE,
    "--in": { required: true, help: "the backup file to restore" },
    "--quota-bytes": { required: true, help: "the tenant's storage quota (spec.quota.storage): a larger restore is refused" },
    "--cleanup-timeout-seconds": { default: "300", help: "how long a failed restore keeps trying to delete what it wrote" },
  },
  verify: {
    "--in": { required: true, help: "the backup file to check" },
    "--list": { default: "false", help: "also print every key (true or false; --list alone is true)" },
  },
};

/** Where a backup goes: one named file, or a directory where it is named by time (and older ones may be deleted). */
export type BackupOutput = { file: string } | { dir: string; keep?: number };

export interface CoreSettings {
  /** Undefined: nowhere. */
  resultFile?: string;
  tenant: string;
  prefix: string;
  endpoints: string[];
  coreCaFile: string;
  coreCertFile: string;
  coreKeyFile: string;
}

export type Settings =
  | ({ command: "backup"; out: BackupOutput; readBudgetBytes: number } & CoreSettings)
  | ({ command: "restore"; in: string; quotaBytes: number; cleanupTimeoutSeconds: number } & CoreSettings)
  | { command: "verify"; in: string; list: boolean };

const DNS_LABEL = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;

export function parseCommandLine(argv: readonly string[]): Settings {
  const [command, ...args] = argv;
  if (!COMMANDS.includes(command as Command)) throw new ConfigError("command", `${command === undefined ? "missing" : `"${command}" is not a command`}: expected ${COMMANDS.join(", ")}, then --flag=value settings`);
  const flags = FLAGS[command as Command];
  const values = new Map<string, string>();
  for (const arg of args) {
    const match = /^(--[a-z-]+)(?:=(.*))?$/s.exec(arg);
    const name = match?.[1] ?? arg.split("=")[0]!;
    if (!match || !(name in flags)) throw new ConfigError(name, `${match ? "unknown flag" : "expected --flag=value"} for ${command}; flags: ${Object.keys(flags).join(", ")}`);
    if (match[2] === undefined && name !== "--list") throw new ConfigError(name, `expected ${name}=value: ${flags[name]!.help}`);
    values.set(name, match[2] ?? "true");
  }
  const read = (flag: string): string => {
    const value = values.get(flag) ?? flags[flag]!.default;
    if (value === undefined || value === "") throw new ConfigError(flag, `is required: ${flags[flag]!.help}`);
    return value;
  };
  const count = (flag: string, min: number): number => {
    const text = read(flag);
    const value = Number(text);
    if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min) throw new ConfigError(flag, `"${text}" must be a whole number of at least ${min}: ${flags[flag]!.help}`);
    return value;
  };

  if (command === "verify") {
    const list = read("--list");
    if (list !== "true" && list !== "false") throw new ConfigError("--list", `"${list}" must be true or false`);
    return { command, in: read("--in"), list: list === "true" };
  }
  const tenant = read("--tenant");
  if (!DNS_LABEL.test(tenant)) throw new ConfigError("--tenant", `"${tenant}" is not a DNS label (lowercase letters, digits, '-')`);
  const prefix = read("--prefix");
  try {
    new TenantKeyspace(prefix);
  } catch (error) {
    throw new ConfigError("--prefix", (error as Error).message);
  }
  if (!prefix.endsWith(`/${tenant}/`)) throw new ConfigError("--prefix", `"${prefix}" must end with "/${tenant}/"`);
  const resultFile = read("--result-file");
  const core: CoreSettings = { ...(resultFile === "-" ? {} : { resultFile }), tenant, prefix, endpoints: parseEndpoints(read("--endpoints")), coreCaFile: read("--cacert"), coreCertFile: read("--cert"), coreKeyFile: read("--key") };
  if (command === "backup") return { command, ...core, out: backupOutput(values, (flag) => count(flag, 1)), readBudgetBytes: count("--read-budget-bytes", 1) };
  return { command: "restore", ...core, in: read("--in"), quotaBytes: count("--quota-bytes", 1), cleanupTimeoutSeconds: count("--cleanup-timeout-seconds", 0) };
}

function backupOutput(values: Map<string, string>, count: (flag: string) => number): BackupOutput {
  const file = values.get("--out");
  const dir = values.get("--out-dir");
  if (file !== undefined && dir !== undefined) throw new ConfigError("--out-dir", "names a directory, and --out a file: give one of them");
  if (values.has("--keep") && dir === undefined) throw new ConfigError("--keep", "needs --out-dir: only backups named by time in a directory are kept or deleted");
  if (dir !== undefined) {
    if (dir === "") throw new ConfigError("--out-dir", `is empty: ${FLAGS.backup["--out-dir"]!.help}`);
    return { dir, ...(values.has("--keep") ? { keep: count("--keep") } : {}) };
  }
  if (file === undefined || file === "") throw new ConfigError("--out", `is required (or --out-dir): ${FLAGS.backup["--out"]!.help}`);
  return { file };
}
