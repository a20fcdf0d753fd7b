// The command line of backup, restore, verify, schedule and delete, in the gateway's style: a command, then
// --flag=value settings with etcd's names for core etcd (--endpoints, --cacert, --cert, --key, as
// etcdctl). A bad one stops the program with exit code 2 and one line naming the setting
// (ConfigError, as gateway/shell/config.ts).
import { ConfigError, parseEndpoints } from "../shell/config.ts";
import { TenantKeyspace } from "../keys.ts";

export { ConfigError };

export const COMMANDS = ["backup", "restore", "verify", "schedule", "delete"] as const;
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
    "--out": { required: true, help: "the backup file to write (written as <file>.partial, then renamed; never overwritten)" },
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
  schedule: {
    "--tenant": CORE["--tenant"]!,
    "--volume-claim": { required: true, help: "the PersistentVolumeClaim (proxy namespace) the scheduled EtcdStorageBackups write to" },
    "--keep": { required: true, help: "how many of the tenant's newest complete scheduled backups to keep once a new one completed" },
    "--kube-ca-file": { required: true, help: "the cluster's CA bundle, to verify the API server (kube-root-ca.crt's ca.crt)" },
    "--token-file": { required: true, help: "the pod's service account token, read again for every call" },
    "--poll-seconds": { default: "2", help: "how often to read the new backup's status while it runs" },
    "--result-file": CORE["--result-file"]!,
  },
  delete: {
    "--file": { required: true, help: "the backup file to delete, with what is left of it as <file>.partial (a missing one is not an error)" },
  },
};

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
  | ({ command: "backup"; out: string; readBudgetBytes: number } & CoreSettings)
  | ({ command: "restore"; in: string; quotaBytes: number; cleanupTimeoutSeconds: number } & CoreSettings)
  | { command: "verify"; in: string; list: boolean }
  | { command: "schedule"; resultFile?: string; tenant: string; volumeClaim: string; keep: number; kubeCaFile: string; tokenFile: string; pollSeconds: number }
  | { command: "delete"; file: string };

const DNS_LABEL = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

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
  if (command === "delete") return { command, file: read("--file") };
  const tenant = read("--tenant");
  if (!DNS_LABEL.test(tenant)) throw new ConfigError("--tenant", `"${tenant}" is not a DNS label (lowercase letters, digits, '-')`);
  const resultFile = read("--result-file");
  if (command === "schedule") {
    const volumeClaim = read("--volume-claim");
    if (!DNS_SUBDOMAIN.test(volumeClaim)) throw new ConfigError("--volume-claim", `"${volumeClaim}" is not a PersistentVolumeClaim's name (a DNS subdomain)`);
    return { command, ...(resultFile === "-" ? {} : { resultFile }), tenant, volumeClaim, keep: count("--keep", 1), kubeCaFile: read("--kube-ca-file"), tokenFile: read("--token-file"), pollSeconds: count("--poll-seconds", 1) };
  }
  const prefix = read("--prefix");
  try {
    new TenantKeyspace(prefix);
  } catch (error) {
    throw new ConfigError("--prefix", (error as Error).message);
  }
  if (!prefix.endsWith(`/${tenant}/`)) throw new ConfigError("--prefix", `"${prefix}" must end with "/${tenant}/"`);
  const core: CoreSettings = { ...(resultFile === "-" ? {} : { resultFile }), tenant, prefix, endpoints: parseEndpoints(read("--endpoints")), coreCaFile: read("--cacert"), coreCertFile: read("--cert"), coreKeyFile: read("--key") };
  if (command === "backup") return { command, ...core, out: read("--out"), readBudgetBytes: count("--read-budget-bytes", 1) };
  return { command: "restore", ...core, in: read("--in"), quotaBytes: count("--quota-bytes", 1), cleanupTimeoutSeconds: count("--cleanup-timeout-seconds", 0) };
}
