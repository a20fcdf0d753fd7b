// Building hook requests the way Metacontroller would: observed children keyed by type and
// namespace/name, related core credentials, and the parent's status from the previous answer.
import { loadConfig, type Config } from "../../hooks/config.ts";
import { CHILD_TYPES, NAMESPACE_TYPE, type EtcdStorageObject, type HookRequest, type HookResponse, type KubeObject, type ObjectsByType } from "../../hooks/observed.ts";
import { issueCa, issueLeaf, type KeyPairPem } from "../../hooks/pki/issue.ts";

export function testConfig(env: Record<string, string> = {}): Config {
  return loadConfig({ CORE_ETCD_ENDPOINTS: "https://10.0.0.1:2379", LOG_LEVEL: "silent", ...env });
}

export function etcdStorage(name: string, spec: Record<string, unknown> = {}, extra: Partial<EtcdStorageObject> = {}): EtcdStorageObject {
  return { apiVersion: "etcdproxy.dev/v1alpha1", kind: "EtcdStorage", metadata: { name, uid: `uid-${name}`, generation: 1 }, spec, ...extra };
}

/** CA 90 days (successor published at day 60, promoted 15 days later), leaves 30 days (renewed at day 20). */
export const QUARTERLY_SPEC = {
  caCertConfigMap: [{ name: "etcd-ca", namespace: "team-a" }],
  clientCertSecret: [{ name: "etcd-client", namespace: "team-a" }],
  signingCertificateValidity: "2160h",
  servingCertificateValidity: "720h",
  clientCertificateValidity: "720h",
};

export const SAMPLE_SPEC = {
  caCertConfigMap: [{ name: "etcd-serving-ca", namespace: "sample-system" }],
  clientCertSecret: [{ name: "etcd-client-cert", namespace: "sample-system" }],
};

export function typeKey(object: Pick<KubeObject, "apiVersion" | "kind">): string {
  return `${object.kind}.${object.apiVersion}`;
}

/** What Metacontroller would observe after applying these children (every child type present). */
export function observe(children: KubeObject[]): ObjectsByType {
  const observed: ObjectsByType = Object.fromEntries(Object.values(CHILD_TYPES).map((type) => [type.key, {}]));
  for (const child of children) {
    (observed[typeKey(child)] ??= {})[`${child.metadata.namespace}/${child.metadata.name}`] = structuredClone(child);
  }
  return observed;
}

/** The next request after an answer: its children observed, its status on the parent. */
export function nextRequest(request: HookRequest, response: HookResponse): HookRequest {
  return { ...request, parent: { ...request.parent, status: structuredClone(response.status) as EtcdStorageObject["status"] }, children: observe(response.children) };
}

export interface CorePki {
  ca: KeyPairPem;
  server: KeyPairPem;
  client: KeyPairPem;
}

/** The cluster etcd's own PKI (not managed by the hooks): the backend client certificate has no CN. */
export async function makeCorePki(notBefore = new Date(Date.now() - 3600_000), years = 10): Promise<CorePki> {
  const notAfter = new Date(notBefore.getTime() + years * 365 * 24 * 3600_000);
  const ca = await issueCa({ commonName: "core etcd CA", organization: "cluster" }, { notBefore, notAfter });
  const server = await issueLeaf({ subject: { commonName: "core-etcd" }, usage: "server", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] }, { notBefore, notAfter }, ca);
  const client = await issueLeaf({ subject: { organization: "etcd-proxy" }, usage: "client", dnsNames: [], ipAddresses: [] }, { notBefore, notAfter }, ca);
  return { ca, server, client };
}

export function coreRelated(config: Config, pki: Pick<CorePki, "ca" | "client">): ObjectsByType {
  const ns = config.proxyNamespace;
  return {
    [CHILD_TYPES.ConfigMap.key]: {
      [`${ns}/${config.coreCaConfigMap}`]: { apiVersion: "v1", kind: "ConfigMap", metadata: { name: config.coreCaConfigMap, namespace: ns }, data: { "ca.crt": pki.ca.certPem } },
    },
    [CHILD_TYPES.Secret.key]: {
      [`${ns}/${config.coreClientSecret}`]: {
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name: config.coreClientSecret, namespace: ns },
        type: "kubernetes.io/tls",
        data: { "tls.crt": b64(pki.client.certPem), "tls.key": b64(pki.client.keyPem) },
      },
    },
  };
}

/** Related Namespaces as Metacontroller sends them: cluster-scoped objects, keyed by name alone. */
export function namespacesRelated(names: readonly string[]): ObjectsByType {
  return {
    [NAMESPACE_TYPE.key]: Object.fromEntries(
      names.map((name) => [
        name,
        { apiVersion: "v1", kind: "Namespace", metadata: { name, uid: `uid-ns-${name}`, labels: { "kubernetes.io/metadata.name": name } }, spec: { finalizers: ["kubernetes"] }, status: { phase: "Active" } },
      ]),
    ),
  };
}

export function syncRequest(parent: EtcdStorageObject, related: ObjectsByType = {}, children: KubeObject[] = []): HookRequest {
  return { controller: { metadata: { name: "etcdstorage" } }, parent, children: observe(children), related, finalizing: false };
}

export function b64(text: string): string {
  return Buffer.from(text, "utf8").toString("base64");
}

export function unb64(text: unknown): string {
  return Buffer.from(String(text), "base64").toString("utf8");
}

export function child(response: HookResponse, kind: string, namespace: string, name: string): KubeObject {
  const found = response.children.find((c) => c.kind === kind && c.metadata.namespace === namespace && c.metadata.name === name);
  if (!found) throw new Error(`no ${kind} ${namespace}/${name} in the answer: ${response.children.map((c) => `${c.kind} ${c.metadata.namespace}/${c.metadata.name}`).join(", ")}`);
  return found;
}

export const DAY = 24 * 3600_000;
export const HOUR = 3600_000;
