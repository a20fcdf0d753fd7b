// A host Kubernetes API server without a cluster: core etcd with TLS, and the real kube-apiserver
// (built from the pinned k8s.io/kubernetes, test/support/parts.ts) on it, with the aggregation
// layer configured as a cluster has it (front-proxy client certificate, request-header CA). Plus
// the two clients the tests use on it: the built kubectl, and a small REST client for what a
// controller does (read, server-side apply, status, delete).
//
// What is missing, because nothing here runs it: kube-controller-manager (no garbage collector,
// no Deployment or Job controller), the kubelet and kube-proxy. test/e2e/metacontroller.ts and
// test/e2e/system.ts do what those would, and say so where they do.
import { generateKeyPairSync } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import https from "node:https";
import path from "node:path";
import { issueCa, issueLeaf, type KeyPairPem } from "../../hooks/pki/issue.ts";
import { part } from "../support/parts.ts";
import { freePort, GiveUp, spawnManaged, startCoreEtcd, waitFor, type CoreEtcd, type CoreEtcdOptions, type ManagedProcess } from "./harness.ts";

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; uid?: string; resourceVersion?: string; generation?: number; labels?: Record<string, string>; annotations?: Record<string, string>; finalizers?: string[]; deletionTimestamp?: string; ownerReferences?: unknown[]; [field: string]: unknown };
  [field: string]: unknown;
}

export interface KubeResponse<T = unknown> {
  status: number;
  body: T;
}

/** A Kubernetes API error as the server words it (its Status message). */
export class KubeError extends Error {
  readonly status: number;
  readonly body: { message?: string; reason?: string; details?: unknown };

  constructor(status: number, body: { message?: string; reason?: string; details?: unknown }, what: string) {
    super(`${what}: HTTP ${status}: ${body?.message ?? JSON.stringify(body)}`);
    this.status = status;
    this.body = body;
  }
}

const validity = () => ({ notBefore: new Date(Date.now() - 3600_000), notAfter: new Date(Date.now() + 365 * 24 * 3600_000) });

/** The host's PKI: its serving and client CA (one, as kubeadm's), the front-proxy CA, and what they sign. */
export interface HostPki {
  ca: KeyPairPem;
  serving: KeyPairPem;
  admin: KeyPairPem;
  frontProxyCa: KeyPairPem;
  frontProxyClient: KeyPairPem;
  /** The service-account signing key (P-256, SEC 1 PEM) and its public key (SPKI PEM). */
  serviceAccountKey: string;
  serviceAccountPublicKey: string;
}

export async function makeHostPki(): Promise<HostPki> {
  const ca = await issueCa({ commonName: "kubernetes" }, validity());
  const serving = await issueLeaf(
    { subject: { commonName: "kube-apiserver" }, usage: "server", dnsNames: ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"], ipAddresses: ["127.0.0.1"] },
    validity(),
    ca,
  );
  const admin = await issueLeaf({ subject: { commonName: "kubernetes-admin", organization: "system:masters" }, usage: "client", dnsNames: [], ipAddresses: [] }, validity(), ca);
  const frontProxyCa = await issueCa({ commonName: "front-proxy-ca" }, validity());
  const frontProxyClient = await issueLeaf({ subject: { commonName: "front-proxy-client" }, usage: "client", dnsNames: [], ipAddresses: [] }, validity(), frontProxyCa);
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return {
    ca,
    serving,
    admin,
    frontProxyCa,
    frontProxyClient,
    serviceAccountKey: privateKey.export({ type: "sec1", format: "pem" }).toString(),
    serviceAccountPublicKey: publicKey.export({ type: "spki", format: "pem" }).toString(),
  };
}

/** A kube-apiserver's etcd: its client URLs and the client's TLS files. */
export interface EtcdAccess {
  servers: string;
  caFile: string;
  certFile: string;
  keyFile: string;
}

export interface RunningKubeApiserver {
  apiserver: ManagedProcess;
  /** https://127.0.0.1:<port> */
  url: string;
  pki: HostPki;
  /** An admin kubeconfig (system:masters) for kubectl, client-go and sample-apiserver's delegation. */
  kubeconfig: string;
  api: KubeApi;
  /** The built kubectl with the admin kubeconfig; a failure is a non-zero code, not an exception. */
  kubectl(args: readonly string[], input?: string): Promise<{ code: number | null; stdout: string; stderr: string }>;
}

export interface HostCluster extends RunningKubeApiserver {
  core: CoreEtcd;
}

/** Runs a built part to its end, with `input` on stdin; output is collected, never logged. */
export function runPart(file: string, args: readonly string[], options: { input?: string; cwd: string; env?: Record<string, string> }): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawnManaged(file, args, { cwd: options.cwd, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: options.cwd, ...options.env }, input: options.input ?? "" });
  return child.exited.then(({ code }) => ({ code, stdout: child.stdout(), stderr: child.stderr() }));
}

/**
 * Core etcd (TLS, client certificates) and kube-apiserver on it, on free loopback ports, with the
 * aggregation layer configured; resolves once /readyz answers 200.
 */
export async function startHostCluster(dir: string, options: CoreEtcdOptions = {}): Promise<HostCluster> {
  const core = await startCoreEtcd(path.join(dir, "core"), options);
  const kube = await startKubeApiserver(dir, { servers: core.endpoint, caFile: core.caFile, certFile: core.certFile, keyFile: core.keyFile });
  return { ...kube, core };
}

/**
 * The real kube-apiserver on `etcd`, on a free loopback port, with the aggregation layer
 * configured; resolves once /readyz answers 200. `extraFlags` come last (the last of a flag wins).
 */
export async function startKubeApiserver(dir: string, etcd: EtcdAccess, extraFlags: readonly string[] = []): Promise<RunningKubeApiserver> {
  const pki = await makeHostPki();
  const files: Record<string, string> = {
    "ca.crt": pki.ca.certPem,
    "serving.crt": pki.serving.certPem,
    "serving.key": pki.serving.keyPem,
    "front-proxy-ca.crt": pki.frontProxyCa.certPem,
    "front-proxy-client.crt": pki.frontProxyClient.certPem,
    "front-proxy-client.key": pki.frontProxyClient.keyPem,
    "sa.key": pki.serviceAccountKey,
    "sa.pub": pki.serviceAccountPublicKey,
  };
  const pkiDir = path.join(dir, "pki");
  await mkdir(pkiDir, { recursive: true });
  for (const [name, content] of Object.entries(files)) await writeFile(path.join(pkiDir, name), content, { mode: 0o600 });
  const file = (name: string) => path.join(pkiDir, name);
  const port = await freePort();
  const url = `https://127.0.0.1:${port}`;
  const apiserver = spawnManaged(
    part("kube-apiserver"),
    [
      `--etcd-servers=${etcd.servers}`,
      `--etcd-cafile=${etcd.caFile}`,
      `--etcd-certfile=${etcd.certFile}`,
      `--etcd-keyfile=${etcd.keyFile}`,
      "--bind-address=127.0.0.1",
      "--advertise-address=127.0.0.1",
      `--secure-port=${port}`,
      `--cert-dir=${path.join(dir, "cert-dir")}`,
      `--tls-cert-file=${file("serving.crt")}`,
      `--tls-private-key-file=${file("serving.key")}`,
      `--client-ca-file=${file("ca.crt")}`,
      "--authorization-mode=Node,RBAC",
      `--service-account-issuer=https://kubernetes.default.svc`,
      `--service-account-key-file=${file("sa.pub")}`,
      `--service-account-signing-key-file=${file("sa.key")}`,
      "--service-cluster-ip-range=10.96.0.0/16",
      // No node, no kube-proxy: the "kubernetes" Service's endpoints cannot be a loopback address.
      "--endpoint-reconciler-type=none",
      // The aggregation layer, as kubeadm configures it.
      `--requestheader-client-ca-file=${file("front-proxy-ca.crt")}`,
      "--requestheader-allowed-names=front-proxy-client",
      "--requestheader-username-headers=X-Remote-User",
      "--requestheader-group-headers=X-Remote-Group",
      "--requestheader-extra-headers-prefix=X-Remote-Extra-",
      `--proxy-client-cert-file=${file("front-proxy-client.crt")}`,
      `--proxy-client-key-file=${file("front-proxy-client.key")}`,
      "--profiling=false",
      ...extraFlags,
    ],
    { cwd: dir, env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } },
  );
  const api = new KubeApi(url, { ca: pki.ca.certPem, cert: pki.admin.certPem, key: pki.admin.keyPem });
  await waitFor(
    "kube-apiserver /readyz",
    async () => {
      if (apiserver.process.exitCode !== null) throw new GiveUp(`kube-apiserver exited with code ${apiserver.process.exitCode}`);
      return (await api.request("GET", "/readyz")).status === 200;
    },
    90_000,
    () => apiserver.logs(),
  );
  const kubeconfig = path.join(dir, "admin.kubeconfig");
  await writeFile(kubeconfig, kubeconfigFor(url, pki.ca.certPem, pki.admin), { mode: 0o600 });
  const kubectl = (args: readonly string[], input?: string) => runPart(part("kubectl"), [`--kubeconfig=${kubeconfig}`, ...args], { cwd: dir, input });
  return { apiserver, url, pki, kubeconfig, api, kubectl };
}

export function kubeconfigFor(server: string, caPem: string, user: KeyPairPem): string {
  const b64 = (text: string) => Buffer.from(text).toString("base64");
  return JSON.stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "host", cluster: { server, "certificate-authority-data": b64(caPem) } }],
    users: [{ name: "admin", user: { "client-certificate-data": b64(user.certPem), "client-key-data": b64(user.keyPem) } }],
    contexts: [{ name: "host", context: { cluster: "host", user: "admin" } }],
    "current-context": "host",
  }, null, 2);
}

interface ApiResource {
  name: string;
  kind: string;
  namespaced: boolean;
}

/** The REST paths of a Kubernetes API, from the server's discovery, as a controller finds them. */
export class KubeApi {
  private readonly agent: https.Agent;
  private readonly discovered = new Map<string, Promise<ApiResource[]>>();

  readonly url: string;
  /** Every Warning header the server sent (PodSecurity on a pod template, a deprecated API...), by call. */
  readonly warnings: string[] = [];

  constructor(url: string, tls: { ca: string; cert: string; key: string }) {
    this.url = url;
    this.agent = new https.Agent({ ...tls, keepAlive: true });
  }

  request<T = unknown>(method: string, pathAndQuery: string, body?: unknown, contentType = "application/json"): Promise<KubeResponse<T>> {
    const payload = body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = https.request(`${this.url}${pathAndQuery}`, { method, agent: this.agent, headers: { accept: "application/json", ...(payload === undefined ? {} : { "content-type": contentType, "content-length": Buffer.byteLength(payload) }) }, timeout: 30_000 }, (res) => {
        const warning = res.headers.warning;
        if (warning !== undefined) this.warnings.push(`${method} ${pathAndQuery}: ${warning}`);
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // not JSON (e.g. /readyz's "ok")
          }
          resolve({ status: res.statusCode ?? 0, body: parsed as T });
        });
        res.on("error", reject);
      });
      req.on("timeout", () => req.destroy(new Error(`${method} ${pathAndQuery} timed out`)));
      req.on("error", reject);
      req.end(payload);
    });
  }

  /** Like request(), but any status other than 2xx is a KubeError naming the call. */
  async call<T = unknown>(method: string, pathAndQuery: string, body?: unknown, contentType?: string): Promise<T> {
    const response = await this.request<T>(method, pathAndQuery, body, contentType);
    if (response.status < 200 || response.status > 299) throw new KubeError(response.status, response.body as never, `${method} ${pathAndQuery}`);
    return response.body;
  }

  private resources(apiVersion: string): Promise<ApiResource[]> {
    let found = this.discovered.get(apiVersion);
    if (found === undefined) {
      found = this.call<{ resources: ApiResource[] }>("GET", apiVersion.includes("/") ? `/apis/${apiVersion}` : `/api/${apiVersion}`).then((list) => list.resources);
      this.discovered.set(apiVersion, found);
      found.catch(() => this.discovered.delete(apiVersion));
    }
    return found;
  }

  /** The collection path of a kind (in `namespace` when namespaced), e.g. /apis/apps/v1/namespaces/x/deployments. */
  async collection(apiVersion: string, kind: string, namespace?: string): Promise<string> {
    const resource = (await this.resources(apiVersion)).find((r) => r.kind === kind && !r.name.includes("/"));
    if (resource === undefined) throw new Error(`the API server serves no kind ${kind} in ${apiVersion}`);
    const root = apiVersion.includes("/") ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
    return resource.namespaced && namespace !== undefined ? `${root}/namespaces/${namespace}/${resource.name}` : `${root}/${resource.name}`;
  }

  /** The kind a resource (plural name) holds, from the server's discovery. */
  async kindOf(apiVersion: string, resource: string): Promise<string> {
    const found = (await this.resources(apiVersion)).find((r) => r.name === resource);
    if (found === undefined) throw new Error(`the API server serves no ${resource} in ${apiVersion}`);
    return found.kind;
  }

  /** The collection path of a resource (plural name), across namespaces. */
  resourcePath(apiVersion: string, resource: string, namespace?: string): string {
    const root = apiVersion.includes("/") ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
    return namespace === undefined ? `${root}/${resource}` : `${root}/namespaces/${namespace}/${resource}`;
  }

  async objectPath(object: Pick<KubeObject, "apiVersion" | "kind" | "metadata">): Promise<string> {
    return `${await this.collection(object.apiVersion, object.kind, object.metadata.namespace)}/${object.metadata.name}`;
  }

  /** The object, or undefined when it does not exist. */
  async get<T extends KubeObject = KubeObject>(apiVersion: string, kind: string, name: string, namespace?: string): Promise<T | undefined> {
    const response = await this.request<T>("GET", `${await this.collection(apiVersion, kind, namespace)}/${name}`);
    if (response.status === 404) return undefined;
    if (response.status !== 200) throw new KubeError(response.status, response.body as never, `GET ${kind} ${namespace ?? ""}/${name}`);
    return response.body;
  }

  /** Server-side apply of `object` by `fieldManager`, forcing ownership of what it sets; `dryRun` changes nothing. */
  async apply<T extends KubeObject = KubeObject>(object: KubeObject, fieldManager: string, options: { dryRun?: boolean } = {}): Promise<T> {
    const query = `?fieldManager=${encodeURIComponent(fieldManager)}&force=true${options.dryRun ? "&dryRun=All" : ""}`;
    return this.call<T>("PATCH", `${await this.objectPath(object)}${query}`, object, "application/apply-patch+yaml");
  }

  async delete(object: Pick<KubeObject, "apiVersion" | "kind" | "metadata">, body: Record<string, unknown> = {}): Promise<void> {
    const response = await this.request("DELETE", await this.objectPath(object), { apiVersion: "v1", kind: "DeleteOptions", ...body });
    if (response.status !== 200 && response.status !== 202 && response.status !== 404) throw new KubeError(response.status, response.body as never, `DELETE ${object.kind} ${object.metadata.namespace ?? ""}/${object.metadata.name}`);
  }

  /** A watch (`?watch=1&...`): its events in order, until close(). */
  watch(pathAndQuery: string): KubeWatch {
    const events: WatchEvent[] = [];
    const waiters: Array<() => void> = [];
    let ended: Error | undefined;
    const wake = () => waiters.splice(0).forEach((w) => w());
    let buffer = "";
    const req = https.request(`${this.url}${pathAndQuery}`, { method: "GET", agent: this.agent, headers: { accept: "application/json" } }, (res) => {
      if (res.statusCode !== 200) {
        ended = new KubeError(res.statusCode ?? 0, {}, `watch ${pathAndQuery}`);
        wake();
      }
      res.on("data", (chunk: Buffer) => {
        buffer += chunk.toString("utf8");
        for (let newline = buffer.indexOf("\n"); newline !== -1; newline = buffer.indexOf("\n")) {
          const line = buffer.slice(0, newline).trim();
          buffer = buffer.slice(newline + 1);
          if (line !== "") events.push(JSON.parse(line) as WatchEvent);
        }
        wake();
      });
      res.on("end", () => {
        ended ??= new Error(`watch ${pathAndQuery} ended`);
        wake();
      });
    });
    req.on("error", (error) => {
      ended ??= error;
      wake();
    });
    req.end();
    let read = 0;
    return {
      next: async (timeoutMs = 10_000) => {
        const deadline = Date.now() + timeoutMs;
        while (read >= events.length) {
          if (ended !== undefined) throw ended;
          const left = deadline - Date.now();
          if (left <= 0) throw new Error(`no watch event on ${pathAndQuery} within ${timeoutMs} ms`);
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, left);
            waiters.push(() => {
              clearTimeout(timer);
              resolve();
            });
          });
        }
        return events[read++]!;
      },
      close: () => req.destroy(),
    };
  }

  close(): void {
    this.agent.destroy();
  }
}

export interface WatchEvent {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: KubeObject;
}

export interface KubeWatch {
  /** The next event, waiting at most `timeoutMs` for it. */
  next(timeoutMs?: number): Promise<WatchEvent>;
  close(): void;
}
