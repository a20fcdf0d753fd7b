// An EtcdStorage as the hooks use it: defaulted and validated once, with the schema of schemas/.
import { parseDuration } from "./duration.ts";
import { LruCache } from "./lru-cache.ts";
import { parseQuantity } from "./quantity.ts";
import { describeErrors, etcdStorageSchema, kubernetesAjv } from "./schema.ts";

export interface Destination {
  name: string;
  namespace: string;
}

/** cpu and memory, each a quantity ("500m", 1, "64Mi"). */
export type ResourceList = Partial<Record<"cpu" | "memory", string | number>>;

/** The proxy container's resources, as in a Pod. */
export interface ResourceRequirements {
  requests?: ResourceList;
  limits?: ResourceList;
}

/** spec.quota as written: every field optional, quantities as a string or an integer. */
export interface QuotaInput {
  storage?: string | number;
  writeBytesPerSecond?: string | number;
  requestsPerSecond?: number;
}

export type QuotaField = keyof QuotaInput;

/** A quantity of bytes as written (status shows it so) and in whole bytes, rounded down (the gateway's unit). */
export interface ByteQuantity {
  quantity: string;
  bytes: number;
}

/** The limits in effect: spec.quota's, or the hook server's defaults where it has none. */
export interface Quota {
  storage: ByteQuantity;
  writeBytesPerSecond: ByteQuantity;
  requestsPerSecond: number;
}

/** spec.backup: scheduled backups onto a claim in the proxy namespace, the newest `keep` kept. */
export interface BackupSchedule {
  schedule: string;
  keep: number;
  volumeClaim: string;
}

export interface EtcdStorageSpec {
  caCertConfigMap: Destination[];
  clientCertSecret: Destination[];
  replicas: number;
  resources: ResourceRequirements;
  deletionPolicy: "Delete" | "Retain";
  quota: Quota;
  /** Validities in milliseconds. */
  signingCertificateValidity: number;
  servingCertificateValidity: number;
  clientCertificateValidity: number;
  /** spec.dataSource: the EtcdStorageBackup whose file is restored before the gateway serves. */
  dataSource?: { backup: string };
  backup?: BackupSchedule;
}

export type SpecResult = { valid: true; spec: EtcdStorageSpec } | { valid: false; problems: string[]; nameValid: boolean };

/**
 * What reading a spec needs of the hook server's configuration (config.ts's Config has it; config.ts
 * checks its quota defaults with quotaProblem, so this module does not import it).
 */
export interface SpecConfig {
  proxyNamespace: string;
  /** spec.quota's defaults, quantities as written. */
  defaultStorageQuota: string;
  defaultWriteBytesPerSecond: string;
  defaultRequestsPerSecond: number;
}

// As in the API server: defaulting first, then validation of the defaulted object.
const applyDefaults = kubernetesAjv({ useDefaults: true }).compile(etcdStorageSchema);
const validating = kubernetesAjv({ useDefaults: false });
const validate = validating.compile(etcdStorageSchema);

type SchemaNode = { properties: Record<string, SchemaNode> };
const quotaFields = (etcdStorageSchema as unknown as SchemaNode).properties.spec!.properties.quota!.properties;
const validateQuotaField = Object.fromEntries(Object.entries(quotaFields).map(([field, schema]) => [field, validating.compile(schema)]));

/** Why a value is refused for spec.quota.<field>, in the schema's words without the field's name; undefined if it is not. */
export function quotaProblem(field: QuotaField, value: unknown): string | undefined {
  const check = validateQuotaField[field]!;
  return check(value) ? undefined : describeErrors(check.errors, value, { quoteValues: true })[0];
}

// Every resync of every tenant reads the same spec again; CEL evaluation made that a third of a
// steady-state sync. The result is a pure function of the key, and callers never modify it.
const results = new LruCache<SpecResult>(4096, 4096 * 2048);

/** Defaults and validates a parent without touching it: the observed request is read-only. */
export function readSpec(parent: { metadata: { name: string }; spec?: unknown }, config: SpecConfig): SpecResult {
  const key = JSON.stringify([config.proxyNamespace, config.defaultStorageQuota, config.defaultWriteBytesPerSecond, config.defaultRequestsPerSecond, parent.metadata.name, parent.spec ?? null]);
  return structuredClone(results.getOrCompute(key, () => computeSpec(parent.metadata.name, parent.spec, config)));
}

function computeSpec(name: string, specInput: unknown, config: SpecConfig): SpecResult {
  const candidate = structuredClone({ metadata: { name }, spec: specInput });
  applyDefaults(candidate);
  if (!validate(candidate)) {
    // The only rule on the object itself is the one on metadata.name.
    const nameValid = !validate.errors!.some((error) => error.instancePath === "");
    return { valid: false, problems: describeErrors(validate.errors, candidate, { quoteValues: true }), nameValid };
  }
  const raw = candidate.spec as Omit<EtcdStorageSpec, `${string}Validity` | "quota"> & Record<`${string}Validity`, string> & { quota?: QuotaInput };
  const spec: EtcdStorageSpec = {
    caCertConfigMap: raw.caCertConfigMap.map(({ name, namespace }) => ({ name, namespace })),
    clientCertSecret: raw.clientCertSecret.map(({ name, namespace }) => ({ name, namespace })),
    replicas: raw.replicas,
    resources: knownResources(raw.resources),
    deletionPolicy: raw.deletionPolicy,
    quota: {
      storage: byteQuantity(raw.quota?.storage ?? config.defaultStorageQuota),
      writeBytesPerSecond: byteQuantity(raw.quota?.writeBytesPerSecond ?? config.defaultWriteBytesPerSecond),
      requestsPerSecond: raw.quota?.requestsPerSecond ?? config.defaultRequestsPerSecond,
    },
    signingCertificateValidity: parseDuration(raw.signingCertificateValidity)!,
    servingCertificateValidity: parseDuration(raw.servingCertificateValidity)!,
    clientCertificateValidity: parseDuration(raw.clientCertificateValidity)!,
    ...(raw.dataSource ? { dataSource: { backup: raw.dataSource.backup } } : {}),
    ...(raw.backup ? { backup: { schedule: raw.backup.schedule, keep: raw.backup.keep, volumeClaim: raw.backup.volumeClaim } } : {}),
  };
  // The proxy namespace holds every tenant's CA keys: no destination may be written there.
  const intoProxyNamespace = (["caCertConfigMap", "clientCertSecret"] as const).flatMap((field) =>
    spec[field].flatMap((d, i) => (d.namespace === config.proxyNamespace ? [`spec.${field}[${i}].namespace: must not be the proxy namespace ${config.proxyNamespace}, which holds the tenants' CA keys`] : [])),
  );
  if (intoProxyNamespace.length > 0) return { valid: false, problems: intoProxyNamespace, nameValid: true };
  return { valid: true, spec };
}

// Schema-valid (a default is held to the same schema): a quantity of at least 1Ki, so never a
// fraction of a byte that would round to none.
function byteQuantity(value: string | number): ByteQuantity {
  return { quantity: String(value), bytes: Number(parseQuantity(value)!.floor()) };
}

/** Only the fields the schema declares, as the API server would have pruned the rest. */
function knownResources(resources: ResourceRequirements): ResourceRequirements {
  const known = (list: ResourceList | undefined): ResourceList | undefined =>
    list && Object.fromEntries((["cpu", "memory"] as const).filter((name) => list[name] !== undefined).map((name) => [name, list[name]!]));
  const requests = known(resources.requests);
  const limits = known(resources.limits);
  return { ...(requests ? { requests } : {}), ...(limits ? { limits } : {}) };
}

/** Every namespace the spec delivers into, each once, sorted. */
export function destinationNamespaces(spec: Pick<EtcdStorageSpec, "caCertConfigMap" | "clientCertSecret">): string[] {
  return [...new Set([...spec.caCertConfigMap, ...spec.clientCertSecret].map((d) => d.namespace))].sort();
}
