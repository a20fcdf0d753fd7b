// Running a tenant for real: the hook's answer, its proxy pod's gateway container started from
// exactly the returned Deployment (command, args, mounted Secrets and ConfigMaps), and the API
// server's credentials written from the returned destination Secret.
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Config } from "../../hooks/config.ts";
import type { HookRequest, HookResponse, KubeObject } from "../../hooks/observed.ts";
import { sync } from "../../hooks/sync.ts";
import { connect, type EtcdClient } from "../support/etcd-client.ts";
import { coreRelated, etcdStorage, syncRequest, unb64 } from "../support/requests.ts";
import { fileURLToPath } from "node:url";
import { freePort, httpGet, materializeVolumes, podSpecOf, runContainer, runEtcdctl, waitFor, type CoreTls, type EtcdRelease, type K8sObject, type RunningContainer } from "./harness.ts";

export interface ApiServerCredentials {
  cacert: string;
  cert: string;
  key: string;
}

export interface RunningTenant {
  name: string;
  request: HookRequest;
  response: HookResponse;
  proxy: RunningProxy;
  /** https://127.0.0.1:<port>, the Service's address on this machine. */
  endpoint: string;
  credentials: ApiServerCredentials;
  etcdctl(args: readonly string[], credentials?: Partial<ApiServerCredentials>): ReturnType<typeof runEtcdctl>;
}

// A single core etcd or a cluster: only its PKI goes into the request.
export function relatedFor(config: Config, core: Pick<CoreTls, "pki">): HookRequest["related"] {
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

// The image's working directory mirrors the repository: the gateway's command runs from here.
const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));

export interface RunningProxy {
  gateway: RunningContainer;
  clientPort: number;
  healthPort: number;
  /** Rewrites the pod's volume files from a later answer, as the kubelet does when Secrets change. */
  updateVolumes(request: HookRequest, response: HookResponse): Promise<void>;
}

export interface ProxyOptions {
  /** Wait until /readyz answers 200 (default). */
  waitReady?: boolean;
  /** What runs the container's /usr/local/bin/node: this Node, unless a wrapper is given (the benchmark's memory cgroup). */
  nodeBinary?: string;
}

/** Starts the proxy pod's container from an answer, exactly as returned, and waits until it is ready. */
export async function startProxy(config: Config, request: HookRequest, response: HookResponse, dir: string, options: ProxyOptions = {}): Promise<RunningProxy> {
  const tenant = request.parent.metadata.name;
  const deployment = find(response, "Deployment", config.proxyNamespace, `etcd-${tenant}`);
  const podSpec = podSpecOf(deployment as K8sObject);
  const [clientPort, healthPort] = [await freePort(), await freePort()];
  const gateway = await runContainer({
    podSpec,
    containerName: "gateway",
    namespace: config.proxyNamespace,
    objects: objectsOf(request, response),
    dir,
    binaries: { "/usr/local/bin/node": options.nodeBinary ?? process.execPath },
    ports: { 2379: clientPort, 2381: healthPort },
    extraPaths: { "/app": REPO_ROOT },
  });
  if (options.waitReady !== false) await waitFor(`gateway of ${tenant} ready`, async () => (await httpGet(`http://127.0.0.1:${healthPort}/readyz`).catch(() => undefined))?.status === 200, 20_000, () => gateway.logs());
  const container = podSpec.containers.find((c) => c.name === "gateway")!;
  return {
    gateway,
    clientPort,
    healthPort,
    updateVolumes: async (nextRequest, nextResponse) => {
      await materializeVolumes(podSpec, container, objectsOf(nextRequest, nextResponse), path.join(dir, "root"), config.proxyNamespace);
    },
  };
}

/** `core`'s release, when given, is the etcdctl the tenant's `etcdctl()` runs (the API server's client of that line). */
export async function startTenant(config: Config, core: Pick<CoreTls, "pki"> & { release?: EtcdRelease }, name: string, spec: Record<string, unknown>, dir: string, now = new Date(), options: ProxyOptions = {}): Promise<RunningTenant> {
  const request = syncRequest(etcdStorage(name, spec), relatedFor(config, core));
  const { response } = await sync(request, config, now);
  const proxy = await startProxy(config, request, response, path.join(dir, "proxy"), options);
  const destination = (spec.clientCertSecret as { name: string; namespace: string }[])[0]!;
  const credentials = await writeCredentials(find(response, "Secret", destination.namespace, destination.name), path.join(dir, "apiserver"));
  const endpoint = `https://127.0.0.1:${proxy.clientPort}`;
  return {
    name,
    request,
    response,
    proxy,
    endpoint,
    credentials,
    etcdctl: (args, override = credentials) => runEtcdctl(endpoint, { cacert: credentials.cacert, ...override } as ApiServerCredentials, args, core.release?.line),
  };
}

/** The tests' etcd client with the API server's credentials; the serving certificate names localhost. */
export async function connectTenant(tenant: RunningTenant): Promise<EtcdClient> {
  const [ca, cert, key] = await Promise.all([tenant.credentials.cacert, tenant.credentials.cert, tenant.credentials.key].map((file) => readFile(file)));
  return connect(tenant.endpoint, { ca: ca!, cert: cert!, key: key!, servername: "localhost" });
}
