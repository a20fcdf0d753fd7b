// Running a tenant for real: the hook's answer, its proxy started from exactly the returned
// Deployment, and the API server's credentials written from the returned destination Secret.
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Config } from "../../hooks/config.ts";
import type { HookRequest, HookResponse, KubeObject } from "../../hooks/observed.ts";
import { sync } from "../../hooks/sync.ts";
import { coreRelated, etcdStorage, syncRequest, unb64 } from "../support/requests.ts";
import { ETCD, freePort, httpGet, podSpecOf, runContainer, runEtcdctl, waitFor, type CoreEtcd, type K8sObject, type RunningContainer } from "./harness.ts";

export interface ApiServerCredentials {
  cacert: string;
  cert: string;
  key: string;
}

export interface RunningTenant {
  name: string;
  request: HookRequest;
  response: HookResponse;
  proxy: RunningContainer;
  clientPort: number;
  metricsPort: number;
  /** https://127.0.0.1:<port>, the Service's address on this machine. */
  endpoint: string;
  credentials: ApiServerCredentials;
  etcdctl(args: readonly string[], credentials?: Partial<ApiServerCredentials>): ReturnType<typeof runEtcdctl>;
}

export function relatedFor(config: Config, core: CoreEtcd): HookRequest["related"] {
  return coreRelated(config, { ca: core.pki.ca, client: core.pki.client });
}

export function objectsOf(request: HookRequest, response: HookResponse): K8sObject[] {
  const related = Object.values(request.related ?? {}).flatMap((byName) => Object.values(byName));
  return [...(response.children as K8sObject[]), ...(related as K8sObject[])];
}

export function find(response: HookResponse, kind: string, namespace: string, name: string): KubeObject {
  const found = response.children.find((c) => c.kind === kind && c.metadata.namespace === namespace && c.metadata.name === name);
  if (!found) throw new Error(`the answer has no ${kind} ${namespace}/${name}`);
  return found;
}

/** Writes a destination Secret's files where an aggregated API server would mount them. */
export async function writeCredentials(secret: KubeObject, dir: string): Promise<ApiServerCredentials> {
  await mkdir(dir, { recursive: true });
  const data = secret.data as Record<string, string>;
  const files = { cacert: "ca.crt", cert: "tls.crt", key: "tls.key" } as const;
  for (const file of Object.values(files)) await writeFile(path.join(dir, file), unb64(data[file]), { mode: 0o600 });
  return { cacert: path.join(dir, files.cacert), cert: path.join(dir, files.cert), key: path.join(dir, files.key) };
}

/** Starts the proxy container of a Deployment from an answer, and waits until it is ready. */
export async function startProxy(config: Config, request: HookRequest, response: HookResponse, dir: string) {
  const tenant = request.parent.metadata.name;
  const deployment = find(response, "Deployment", config.proxyNamespace, `etcd-${tenant}`);
  const clientPort = await freePort();
  const metricsPort = await freePort();
  const proxy = await runContainer({
    podSpec: podSpecOf(deployment as K8sObject),
    containerName: "grpc-proxy",
    namespace: config.proxyNamespace,
    objects: objectsOf(request, response),
    dir,
    binaries: { "/usr/local/bin/etcd": ETCD },
    ports: { 2379: clientPort, 2381: metricsPort },
  });
  await waitFor(`proxy of ${tenant} ready`, async () => (await httpGet(`http://127.0.0.1:${metricsPort}/health`).catch(() => undefined))?.status === 200, 20_000, () => proxy.logs());
  return { proxy, clientPort, metricsPort };
}

export async function startTenant(config: Config, core: CoreEtcd, name: string, spec: Record<string, unknown>, dir: string, now = new Date()): Promise<RunningTenant> {
  const request = syncRequest(etcdStorage(name, spec), relatedFor(config, core));
  const { response } = await sync(request, config, now);
  const { proxy, clientPort, metricsPort } = await startProxy(config, request, response, path.join(dir, "proxy"));
  const destination = (spec.clientCertSecret as { name: string; namespace: string }[])[0]!;
  const credentials = await writeCredentials(find(response, "Secret", destination.namespace, destination.name), path.join(dir, "apiserver"));
  const endpoint = `https://127.0.0.1:${clientPort}`;
  return {
    name,
    request,
    response,
    proxy,
    clientPort,
    metricsPort,
    endpoint,
    credentials,
    etcdctl: (args, override = credentials) => runEtcdctl(endpoint, { cacert: credentials.cacert, ...override } as ApiServerCredentials, args),
  };
}
