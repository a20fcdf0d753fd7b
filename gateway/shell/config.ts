// The gateway's settings, from its command line (the proxy Deployment writes them). A bad one
// stops the gateway at start with exit code 2 and a line naming the flag. The names are etcd's:
// --endpoints, --cacert, --cert, --key towards core etcd (as etcdctl), --cert-file, --key-file,
// --trusted-ca-file towards clients (as an etcd member).
import type { Level } from "../log.ts";

export interface GatewayConfig {
  tenant: string;
  prefix: string;
  endpoints: string[];
  listen: Address;
  health: Address;
  certFile: string;
  keyFile: string;
  trustedCaFile: string;
  coreCaFile: string;
  coreCertFile: string;
  coreKeyFile: string;
  logLevel: Level;
  quota: { storageBytes: number; writeBytesPerSecond: number; requestsPerSecond: number };
  replicas: number;
}

export interface Address {
  host: string;
  port: number;
}

export class ConfigError extends Error {
  readonly setting: string;
  constructor(setting: string, problem: string) {
    super(`${setting}: ${problem}`);
    this.setting = setting;
  }
}

const FLAGS = {
  "--tenant": { required: true, help: "the EtcdStorage's name" },
  "--prefix": { required: true, help: "the tenant's key prefix in core etcd, e.g. /etcdstorage/<name>/" },
  "--endpoints": { required: true, help: "comma-separated https:// URLs of core etcd" },
  "--listen-address": { default: "0.0.0.0:2379", help: "host:port of the tenant's gRPC endpoint (TLS)" },
  "--health-address": { default: "0.0.0.0:2381", help: "host:port of /livez, /readyz and /metrics (plain HTTP)" },
  "--cert-file": { required: true, help: "the gateway's serving certificate (PEM)" },
  "--key-file": { required: true, help: "its private key" },
  "--trusted-ca-file": { required: true, help: "CA bundle a tenant's client certificate must chain to" },
  "--cacert": { required: true, help: "CA bundle of core etcd" },
  "--cert": { required: true, help: "the client certificate for core etcd" },
  "--key": { required: true, help: "its private key" },
  "--log-level": { default: "info", help: "fatal, error, warn, info, debug or trace" },
  "--quota-storage-bytes": { required: true, help: "live bytes of keys and values the tenant may store (spec.quota.storage)" },
  "--quota-write-bytes-per-second": { required: true, help: "bytes of keys and values the tenant may write per second (spec.quota.writeBytesPerSecond)" },
  "--quota-requests-per-second": { required: true, help: "calls and stream messages per second (spec.quota.requestsPerSecond)" },
  "--replicas": { default: "1", help: "the tenant's gateway replicas, which share its rates and headroom" },
} as const satisfies Record<string, { required?: true; default?: string; help: string }>;

type Flag = keyof typeof FLAGS;
const LOG_LEVELS: readonly string[] = ["fatal", "error", "warn", "info", "debug", "trace"] satisfies Level[];
const DNS_LABEL = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;

export function parseFlags(argv: readonly string[]): GatewayConfig {
  const values = new Map<Flag, string>();
  for (const arg of argv) {
    const match = /^(--[a-z-]+)=(.*)$/s.exec(arg);
    if (!match) throw new ConfigError(arg.split("=")[0]!, `expected --flag=value; flags: ${Object.keys(FLAGS).join(", ")}`);
    const [, name, value] = match as unknown as [string, string, string];
    if (!(name in FLAGS)) throw new ConfigError(name, `unknown flag; flags: ${Object.keys(FLAGS).join(", ")}`);
    values.set(name as Flag, value);
  }
  const read = (flag: Flag): string => {
    const spec = FLAGS[flag] as { required?: true; default?: string; help: string };
    const value = values.get(flag) ?? spec.default;
    if (value === undefined || value === "") throw new ConfigError(flag, `is required: ${spec.help}`);
    return value;
  };
  const count = (flag: Flag, min: number): number => {
    const text = read(flag);
    const value = Number(text);
    if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min) throw new ConfigError(flag, `"${text}" must be a whole number of at least ${min}: ${FLAGS[flag].help}`);
    return value;
  };

  const tenant = read("--tenant");
  if (!DNS_LABEL.test(tenant)) throw new ConfigError("--tenant", `"${tenant}" is not a DNS label (lowercase letters, digits, '-')`);
  const prefix = read("--prefix");
  if (!/^\/[\x21-\x7e]*\/$/.test(prefix) || prefix === "/" || !prefix.endsWith(`/${tenant}/`)) {
    throw new ConfigError("--prefix", `"${prefix}" must be printable ASCII starting with "/" and ending with "/${tenant}/"`);
  }
  const logLevel = read("--log-level");
  if (!LOG_LEVELS.includes(logLevel)) throw new ConfigError("--log-level", `"${logLevel}" must be one of ${LOG_LEVELS.join(", ")}`);
  return {
    tenant,
    prefix,
    endpoints: parseEndpoints(read("--endpoints")),
    listen: parseAddress("--listen-address", read("--listen-address")),
    health: parseAddress("--health-address", read("--health-address")),
    certFile: read("--cert-file"),
    keyFile: read("--key-file"),
    trustedCaFile: read("--trusted-ca-file"),
    coreCaFile: read("--cacert"),
    coreCertFile: read("--cert"),
    coreKeyFile: read("--key"),
    logLevel: logLevel as Level,
    quota: { storageBytes: count("--quota-storage-bytes", 1), writeBytesPerSecond: count("--quota-write-bytes-per-second", 1), requestsPerSecond: count("--quota-requests-per-second", 1) },
    replicas: count("--replicas", 1),
  };
}

/** Core etcd's client URLs from a comma-separated flag (the gateway's and the backup programs'). */
export function parseEndpoints(text: string): string[] {
  const endpoints = text.split(",").map((e) => e.trim()).filter(Boolean);
  for (const endpoint of endpoints) {
    let url: URL;
    try {
      url = new URL(endpoint);
    } catch {
      throw new ConfigError("--endpoints", `"${endpoint}" is not a URL`);
    }
    if (url.protocol !== "https:" || url.pathname !== "/" || url.search || url.username) {
      throw new ConfigError("--endpoints", `"${endpoint}" must be https://host:port (core etcd is reached with a client certificate)`);
    }
  }
  if (endpoints.length === 0) throw new ConfigError("--endpoints", "names no endpoint");
  return endpoints;
}

function parseAddress(flag: Flag, text: string): Address {
  const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text);
  const port = Number(match?.[2]);
  if (!match || port < 1 || port > 65535) throw new ConfigError(flag, `"${text}" must be host:port with a port from 1 to 65535`);
  return { host: match[1]!.replace(/^\[|\]$/g, ""), port };
}

/** The settings as one log line: file paths, never file contents. */
export function describeConfig(config: GatewayConfig): Record<string, unknown> {
  return { ...config, listen: `${config.listen.host}:${config.listen.port}`, health: `${config.health.host}:${config.health.port}` };
}
