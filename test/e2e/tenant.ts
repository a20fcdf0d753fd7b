// Running a tenant for real: the hook's answer, its proxy pod's containers (grpc-proxy and, with
// the API allowlist on, the nginx gateway) started from exactly the returned Deployment and
// ConfigMap, and the API server's credentials written from the returned destination Secret.
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Config } from "../../hooks/config.ts";
import type { HookRequest, HookResponse, KubeObject } from "../../hooks/observed.ts";
import { sync } from "../../hooks/sync.ts";
import { coreRelated, etcdStorage, syncRequest, unb64 } from "../support/requests.ts";
import { ETCD, freePort, httpGet, podSpecOf, runContainer, runEtcdctl, tcpAccepts, waitFor, type CoreEtcd, type K8sObject, type RunningContainer } from "./harness.ts";

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
  /** The nginx gateway, when the Deployment has one. */
  gateway?: RunningContainer;
  clientPort: number;
  /** grpc-proxy's loopback port behind the gateway. */
  upstreamPort: number;
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

const NGINX = "/usr/sbin/nginx";

/**
 * The local executable for the gateway's nginx. In the pod, nginx's master and workers are one
 * unprivileged uid that reads the 0440 volume files through fsGroup. Started as root (as tests
 * here are), nginx would hand its workers to "nobody", who cannot read them: a wrapper keeps the
 * workers root with `-g "user root;"`, the only thing it adds to the container's command.
 */
async function localNginx(dir: string): Promise<string> {
  if (process.getuid?.() !== 0) return NGINX;
  const wrapper = path.join(dir, "nginx-workers-as-root");
  await mkdir(dir, { recursive: true });
  await writeFile(wrapper, `#!/bin/sh\nexec ${NGINX} -g 'user root;' "$@"\n`, { mode: 0o755 });
  return wrapper;
}

/**
 * The objects a container of the pod sees, with the gateway's nginx.conf moved to this machine's
 * ports. Only the port numbers of the `listen` lines and of the upstream server change: every
 * other line of the generated configuration runs as the hook wrote it.
 */
export function withLocalPorts(objects: K8sObject[], gatewayConfigMap: string, ports: { client: number; upstream: number }): K8sObject[] {
  return objects.map((object) => {
    if (object.kind !== "ConfigMap" || object.metadata?.name !== gatewayConfigMap) return object;
    const conf = object.data!["nginx.conf"]!;
    const local = conf.replace(/^(\s*listen\s+(?:\[::\]:)?)2379(?=\s)/gm, `$1${ports.client}`).replace(/^(\s*server\s+127\.0\.0\.1:)23790(?=;)/gm, `$1${ports.upstream}`);
    if (local === conf) throw new Error(`${gatewayConfigMap}: no port to move in nginx.conf`);
    return { ...object, data: { ...object.data, "nginx.conf": local } };
  });
}

/** Starts the containers of a Deployment's proxy pod from an answer, and waits until they are ready. */
export async function startProxy(config: Config, request: HookRequest, response: HookResponse, dir: string) {
  const tenant = request.parent.metadata.name;
  const deployment = find(response, "Deployment", config.proxyNamespace, `etcd-${tenant}`);
  const podSpec = podSpecOf(deployment as K8sObject);
  const [clientPort, upstreamPort, metricsPort] = [await freePort(), await freePort(), await freePort()];
  const ports = { 2379: clientPort, 23790: upstreamPort, 2381: metricsPort };
  const objects = withLocalPorts(objectsOf(request, response), `etcd-${tenant}-gateway`, { client: clientPort, upstream: upstreamPort });
  const binaries = { "/usr/local/bin/etcd": ETCD, [NGINX]: await localNginx(dir) };
  // Both containers share `dir` (the pod's filesystem view): an emptyDir is one directory for both.
  const run = (containerName: string) => runContainer({ podSpec, containerName, namespace: config.proxyNamespace, objects, dir, binaries, ports });
  const proxy = await run("grpc-proxy");
  const gateway = podSpec.containers.some((c) => c.name === "gateway") ? await run("gateway") : undefined;
  const logs = () => `${proxy.logs()}\n--- gateway ---\n${gateway?.logs() ?? "(none)"}`;
  await waitFor(`proxy of ${tenant} ready`, async () => (await httpGet(`http://127.0.0.1:${metricsPort}/health`).catch(() => undefined))?.status === 200, 20_000, logs);
  // The gateway's readiness probe: a tcpSocket on the client port.
  if (gateway) await waitFor(`gateway of ${tenant} ready`, () => tcpAccepts(clientPort), 20_000, logs);
  return { proxy, gateway, clientPort, upstreamPort, metricsPort };
}

export async function startTenant(config: Config, core: CoreEtcd, name: string, spec: Record<string, unknown>, dir: string, now = new Date()): Promise<RunningTenant> {
  const request = syncRequest(etcdStorage(name, spec), relatedFor(config, core));
  const { response } = await sync(request, config, now);
  const { proxy, gateway, clientPort, upstreamPort, metricsPort } = await startProxy(config, request, response, path.join(dir, "proxy"));
  const destination = (spec.clientCertSecret as { name: string; namespace: string }[])[0]!;
  const credentials = await writeCredentials(find(response, "Secret", destination.namespace, destination.name), path.join(dir, "apiserver"));
  const endpoint = `https://127.0.0.1:${clientPort}`;
  return {
    name,
    request,
    response,
    proxy,
    gateway,
    clientPort,
    upstreamPort,
    metricsPort,
    endpoint,
    credentials,
    etcdctl: (args, override = credentials) => runEtcdctl(endpoint, { cacert: credentials.cacert, ...override } as ApiServerCredentials, args),
  };
}
