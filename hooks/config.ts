// Hook configuration, read once from the environment at start. Every check names the variable,
// because a bad setting must stop the server before it can shape a single child.
import { isIP } from "node:net";
import { quotaProblem, type QuotaField } from "./spec.ts";

export interface Config {
  port: number;
  host: string;
  coreEtcdEndpoints: string[];
  proxyNamespace: string;
  coreCaConfigMap: string;
  coreClientSecret: string;
  tenantPrefixRoot: string;
  etcdImage: string;
  clusterDomain: string;
  logLevel: LogLevel;
  bodyLimitBytes: number;
  /** The project's own image (the hook server's): the proxy pods run its tenant gateway. */
  gatewayImage: string;
  /** spec.quota's defaults, quantities as written: status.quota shows a defaulted tenant's so. */
  defaultStorageQuota: string;
  defaultWriteBytesPerSecond: string;
  defaultRequestsPerSecond: number;
}

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
type LogLevel = (typeof LOG_LEVELS)[number];

export const DEFAULTS = {
  PORT: "8080",
  HOST: "0.0.0.0",
  PROXY_NAMESPACE: "kube-apiserver-storage",
  CORE_CA_CONFIGMAP: "etcd-coreserving-ca",
  CORE_CLIENT_SECRET: "etcd-coreserving-cert",
  TENANT_PREFIX_ROOT: "/etcdstorage/",
  ETCD_IMAGE: "registry.k8s.io/etcd:3.6.14-0",
  CLUSTER_DOMAIN: "cluster.local",
  LOG_LEVEL: "info",
  BODY_LIMIT_BYTES: String(8 * 1024 * 1024),
  GATEWAY_IMAGE: "etcdstorage:0.1.0",
  DEFAULT_STORAGE_QUOTA: "256Mi",
  DEFAULT_WRITE_BYTES_PER_SECOND: "256Ki",
  DEFAULT_REQUESTS_PER_SECOND: "1000",
} as const;

/** The variable each setting is read from: the start-up line and every refusal name it. */
export const VARIABLES = {
  port: "PORT",
  host: "HOST",
  coreEtcdEndpoints: "CORE_ETCD_ENDPOINTS",
  proxyNamespace: "PROXY_NAMESPACE",
  coreCaConfigMap: "CORE_CA_CONFIGMAP",
  coreClientSecret: "CORE_CLIENT_SECRET",
  tenantPrefixRoot: "TENANT_PREFIX_ROOT",
  etcdImage: "ETCD_IMAGE",
  clusterDomain: "CLUSTER_DOMAIN",
  logLevel: "LOG_LEVEL",
  bodyLimitBytes: "BODY_LIMIT_BYTES",
  gatewayImage: "GATEWAY_IMAGE",
  defaultStorageQuota: "DEFAULT_STORAGE_QUOTA",
  defaultWriteBytesPerSecond: "DEFAULT_WRITE_BYTES_PER_SECOND",
  defaultRequestsPerSecond: "DEFAULT_REQUESTS_PER_SECOND",
} as const satisfies Record<keyof Config, string>;

export class ConfigError extends Error {
  readonly variable: string;
  constructor(variable: string, problem: string) {
    super(`${variable}: ${problem}`);
    this.name = "ConfigError";
    this.variable = variable;
  }
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
// The cluster's own keys live under /registry/; a tenant root must be disjoint from it.
const KUBERNETES_ROOT = "/registry/";
// etcd releases with the security fixes this project relies on (the cleanup Job's etcdctl).
const MINIMUM_ETCD = { "3.5": 33, "3.6": 14 } as const;

export function loadConfig(env: Record<string, string | undefined>): Config {
  const read = (name: keyof typeof DEFAULTS) => env[name]?.trim() || DEFAULTS[name];
  return {
    port: parsePort(read("PORT")),
    host: parseHost(read("HOST")),
    coreEtcdEndpoints: parseEndpoints(env.CORE_ETCD_ENDPOINTS),
    proxyNamespace: parseName("PROXY_NAMESPACE", read("PROXY_NAMESPACE"), DNS_LABEL, 63),
    coreCaConfigMap: parseName("CORE_CA_CONFIGMAP", read("CORE_CA_CONFIGMAP"), DNS_SUBDOMAIN, 253),
    coreClientSecret: parseName("CORE_CLIENT_SECRET", read("CORE_CLIENT_SECRET"), DNS_SUBDOMAIN, 253),
    tenantPrefixRoot: parsePrefixRoot(read("TENANT_PREFIX_ROOT")),
    etcdImage: parseEtcdImage(read("ETCD_IMAGE")),
    clusterDomain: parseName("CLUSTER_DOMAIN", read("CLUSTER_DOMAIN"), DNS_SUBDOMAIN, 253),
    logLevel: parseLogLevel(read("LOG_LEVEL")),
    bodyLimitBytes: parseBodyLimit(read("BODY_LIMIT_BYTES")),
    gatewayImage: parseGatewayImage(read("GATEWAY_IMAGE")),
    defaultStorageQuota: parseQuotaDefault("DEFAULT_STORAGE_QUOTA", "storage", read("DEFAULT_STORAGE_QUOTA")),
    defaultWriteBytesPerSecond: parseQuotaDefault("DEFAULT_WRITE_BYTES_PER_SECOND", "writeBytesPerSecond", read("DEFAULT_WRITE_BYTES_PER_SECOND")),
    defaultRequestsPerSecond: parseQuotaDefault("DEFAULT_REQUESTS_PER_SECOND", "requestsPerSecond", read("DEFAULT_REQUESTS_PER_SECOND")),
  };
}

function parsePort(text: string): number {
  const port = Number(text);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ConfigError("PORT", `must be an integer from 1 to 65535, got "${text}"`);
  }
  return port;
}

// A host name in any case (it is resolved, not matched), or an IPv4 or IPv6 address.
const HOST_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/i;

function parseHost(host: string): string {
  if (isIP(host) === 0 && (host.length > 253 || !HOST_NAME.test(host))) {
    throw new ConfigError("HOST", `"${host}" is neither an IP address nor a host name`);
  }
  return host;
}

function parseEndpoints(text: string | undefined): string[] {
  const endpoints = (text ?? "").split(",").map((e) => e.trim()).filter(Boolean);
  if (endpoints.length === 0) {
    throw new ConfigError("CORE_ETCD_ENDPOINTS", "is required: the comma-separated https:// URLs of the cluster's etcd");
  }
  for (const endpoint of endpoints) {
    let url: URL;
    try {
      url = new URL(endpoint);
    } catch {
      throw new ConfigError("CORE_ETCD_ENDPOINTS", `"${endpoint}" is not a URL`);
    }
    if (url.protocol !== "https:") {
      throw new ConfigError("CORE_ETCD_ENDPOINTS", `"${endpoint}" must use https: the proxy authenticates to etcd with a client certificate`);
    }
    if (url.pathname !== "/" || url.search || url.hash || url.username) {
      throw new ConfigError("CORE_ETCD_ENDPOINTS", `"${endpoint}" must be scheme://host:port only`);
    }
    if (endpoint.includes(" ")) throw new ConfigError("CORE_ETCD_ENDPOINTS", `"${endpoint}" contains a space`);
  }
  return endpoints;
}

function parseName(variable: string, value: string, pattern: RegExp, maxLength: number): string {
  if (value.length > maxLength || !pattern.test(value)) {
    throw new ConfigError(variable, `"${value}" is not a valid Kubernetes name (lowercase letters, digits, '-', at most ${maxLength} characters)`);
  }
  return value;
}

function parsePrefixRoot(root: string): string {
  if (!root.startsWith("/") || !root.endsWith("/")) {
    throw new ConfigError("TENANT_PREFIX_ROOT", `"${root}" must start and end with "/"`);
  }
  if (root === "/") {
    throw new ConfigError("TENANT_PREFIX_ROOT", `"/" would put tenants beside the cluster's own keys; use a dedicated root such as /etcdstorage/`);
  }
  if (root.startsWith(KUBERNETES_ROOT) || KUBERNETES_ROOT.startsWith(root)) {
    throw new ConfigError("TENANT_PREFIX_ROOT", `"${root}" overlaps the Kubernetes API server's keys under ${KUBERNETES_ROOT}`);
  }
  if (/[\s\0]/.test(root) || root.includes("//")) {
    throw new ConfigError("TENANT_PREFIX_ROOT", `"${root}" must not contain whitespace or an empty path segment`);
  }
  return root;
}

// registry/path/etcd:3.6.14-0, optionally pinned by @sha256 digest.
const ETCD_IMAGE = /^[a-z0-9.-]+(?::\d+)?(?:\/[a-z0-9._-]+)*\/etcd:v?(\d+)\.(\d+)\.(\d+)(?:-\d+)?(?:@sha256:[a-f0-9]{64})?$/;

function parseEtcdImage(image: string): string {
  const match = ETCD_IMAGE.exec(image);
  if (!match) {
    throw new ConfigError("ETCD_IMAGE", `"${image}" must be an etcd image with a version tag, such as registry.k8s.io/etcd:3.6.14-0`);
  }
  const [major, minor, patch] = match.slice(1, 4).map(Number) as [number, number, number];
  const minimumPatch = MINIMUM_ETCD[`${major}.${minor}` as keyof typeof MINIMUM_ETCD];
  const tooOld = major < 3 || (major === 3 && minor < 5) || (minimumPatch !== undefined && patch < minimumPatch);
  if (tooOld) {
    throw new ConfigError("ETCD_IMAGE", `"${image}" is etcd ${major}.${minor}.${patch}; use 3.5.33+ or 3.6.14+ (security fixes)`);
  }
  return image;
}

function parseLogLevel(level: string): LogLevel {
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new ConfigError("LOG_LEVEL", `"${level}" must be one of ${LOG_LEVELS.join(", ")}`);
  }
  return level as LogLevel;
}

function parseBodyLimit(text: string): number {
  const limit = Number(text);
  if (!Number.isInteger(limit) || limit < 65536) {
    throw new ConfigError("BODY_LIMIT_BYTES", `must be an integer of at least 65536 bytes, got "${text}"`);
  }
  return limit;
}

// [registry[:port]/]path/name[:tag][@sha256:digest] with a tag or a digest: never an implied :latest.
const IMAGE_REFERENCE = /^(?:[a-z0-9.-]+(?::\d+)?\/)?[a-z0-9._-]+(?:\/[a-z0-9._-]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$/;

function parseGatewayImage(image: string): string {
  const match = IMAGE_REFERENCE.exec(image);
  if (!match || (match[1] === undefined && match[2] === undefined)) {
    throw new ConfigError("GATEWAY_IMAGE", `"${image}" must be an image with a tag or digest, such as ${DEFAULTS.GATEWAY_IMAGE} (the project's image: the hook server's own)`);
  }
  return image;
}

// A default is held to the bounds of the spec.quota field it stands in for, by the same schema: a
// default no tenant could write would be refused for every tenant that relies on it.
function parseQuotaDefault(variable: string, field: "requestsPerSecond", text: string): number;
function parseQuotaDefault(variable: string, field: Exclude<QuotaField, "requestsPerSecond">, text: string): string;
function parseQuotaDefault(variable: string, field: QuotaField, text: string): string | number {
  // The schema types requestsPerSecond as an integer; anything else stays text and is refused as such.
  const value = field === "requestsPerSecond" && /^[0-9]+$/.test(text) ? Number(text) : text;
  const problem = quotaProblem(field, value);
  if (problem !== undefined) throw new ConfigError(variable, `the default of spec.quota.${field} ${problem}`);
  return value;
}

/** Every setting, as the server runs with it, by variable: for the start-up log line. Nothing in it is secret. */
export function effectiveConfiguration(config: Config): Record<string, unknown> {
  return Object.fromEntries(Object.entries(VARIABLES).map(([field, variable]) => [variable, config[field as keyof Config]]));
}

/**
 * The setting to blame when the server cannot listen, if it is one: an address that does not
 * resolve or is not this machine's is HOST's fault, a port taken or forbidden is PORT's.
 */
export function listenRefusal(error: unknown, config: Pick<Config, "host" | "port">): ConfigError | undefined {
  const where = `${config.host}:${config.port}`;
  switch ((error as NodeJS.ErrnoException | undefined)?.code) {
    case "EADDRINUSE":
      return new ConfigError("PORT", `${config.port} is already in use on ${config.host} (${where}); choose a free port`);
    case "EACCES":
      return new ConfigError("PORT", `listening on ${where} is not permitted (ports below 1024 need privileges the hook server does not have)`);
    case "ENOTFOUND":
    case "EAI_AGAIN":
    case "EAI_FAIL":
    case "EAI_NONAME":
      return new ConfigError("HOST", `"${config.host}" does not resolve to an address; use an IP address such as 0.0.0.0 or a resolvable host name`);
    case "EADDRNOTAVAIL":
      return new ConfigError("HOST", `"${config.host}" is not an address of this machine; use 0.0.0.0 to listen on every address`);
    default:
      return undefined;
  }
}
