// The whole system on one machine, with real parts only: core etcd and a host kube-apiserver
// (test/e2e/kube.ts), manifests/ installed with the built kustomize and kubectl, the hook server
// run from its installed Deployment, Metacontroller's work done by test/e2e/metacontroller.ts, a
// tenant's gateway run from the Deployment the hooks returned (as the API server holds it), and
// sample-apiserver storing through that gateway and registered with the host's aggregator.
// Shared by the end-to-end test (test/e2e/kubernetes.test.ts) and `npm run demo`.
//
// Where a cluster component is missing, this module does its work and says so:
//   - kubelet: a pod's container runs as a process from its exact command, args and env, with its
//     Secrets and ConfigMaps (read from the API server) as files, a PersistentVolumeClaim as a
//     local directory per claim (harness.ts runContainer); recordJobPod writes the pod of a Job,
//     with its termination message, as the kubelet would report it;
//   - Deployment and Job controllers: once that process is ready (or has exited), the status the
//     controller would write is written through the status subresource;
//   - kube-proxy and DNS: a Service's address is the process's loopback port, and sample-apiserver's
//     APIService goes through a Service of type ExternalName naming localhost (the aggregator
//     resolves those itself);
//   - garbage collector: once a parent is gone, what it owned is deleted.
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { issueCa, issueLeaf } from "../../hooks/pki/issue.ts";
import { part } from "../support/parts.ts";
import { freePort, GiveUp, httpGet, podSpecOf, runContainer, spawnManaged, waitFor, type CoreEtcdOptions, type K8sObject, type ManagedProcess, type RunningContainer } from "./harness.ts";
import { KubeApi, runPart, startHostCluster, type HostCluster, type KubeObject } from "./kube.ts";
import { CompositeControllerStandIn, type Reconciled } from "./metacontroller.ts";

export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
const MANIFESTS = path.join(REPO_ROOT, "manifests");
export const PROXY_NAMESPACE = "kube-apiserver-storage";
const HOOKS_NAMESPACE = "etcdstorage-system";
const CONTROLLER = "etcdstorage";
/** The image the Dockerfile builds runs `node dist/hooks/server.js` from /app when a container names no command. */
const IMAGE = { command: ["node", "dist/hooks/server.js"], workingDir: "/app" };

// Metacontroller's CompositeController type, so that manifests/ applies whole. Its real CRD comes
// with Metacontroller, which is not built here; this one stores the object as given.
const COMPOSITE_CONTROLLER_CRD = {
  apiVersion: "apiextensions.k8s.io/v1",
  kind: "CustomResourceDefinition",
  // As Metacontroller's own CRD says of its *.k8s.io group.
  metadata: { name: "compositecontrollers.metacontroller.k8s.io", annotations: { "api-approved.kubernetes.io": "unapproved, request not yet submitted" } },
  spec: {
    group: "metacontroller.k8s.io",
    scope: "Cluster",
    names: { plural: "compositecontrollers", singular: "compositecontroller", kind: "CompositeController", shortNames: ["cc"] },
    versions: [{ name: "v1alpha1", served: true, storage: true, schema: { openAPIV3Schema: { type: "object", "x-kubernetes-preserve-unknown-fields": true } } }],
  },
};

export interface SystemOptions extends CoreEtcdOptions {
  /** Progress lines for a person (the demo); the test passes none. */
  log?: (line: string) => void;
}

export interface RunningSystem {
  dir: string;
  host: HostCluster;
  hookServer: RunningContainer;
  hooksUrl: string;
  metacontroller: CompositeControllerStandIn;
  log: (line: string) => void;
}

/** Host, manifests, core credentials and the hook server: everything before the first EtcdStorage. */
export async function startSystem(dir: string, options: SystemOptions = {}): Promise<RunningSystem> {
  const log = options.log ?? (() => undefined);
  log("core etcd and kube-apiserver");
  const host = await startHostCluster(path.join(dir, "host"), options);

  log("manifests/ with kustomize and kubectl");
  await applyJson(host, COMPOSITE_CONTROLLER_CRD);
  await waitEstablished(host, COMPOSITE_CONTROLLER_CRD.metadata.name);
  const hooksPort = await freePort();
  const manifests = await kustomizeInstall(path.join(dir, "deploy"), host, hooksPort);
  const installed = await host.kubectl(["apply", "-f", "-"], manifests);
  // A warning (a deprecated API, PodSecurity on the hook server's pod template) fails the install too.
  if (installed.code !== 0 || installed.stderr !== "") throw new Error(`kubectl apply of manifests/: exit ${installed.code}: ${installed.stderr}`);
  await waitEstablished(host, "etcdstorages.etcdproxy.dev");

  // README step 4: the proxies' client certificate for core etcd and its CA, in the proxy namespace.
  await must(host.kubectl(["-n", PROXY_NAMESPACE, "create", "configmap", "etcd-coreserving-ca", `--from-file=ca.crt=${host.core.caFile}`]), "core CA ConfigMap");
  await must(host.kubectl(["-n", PROXY_NAMESPACE, "create", "secret", "tls", "etcd-coreserving-cert", `--cert=${host.core.certFile}`, `--key=${host.core.keyFile}`]), "core client Secret");
  // The root CA publisher's part (kube-controller-manager): the cluster's CA in every namespace, as
  // kube-root-ca.crt, which a pod's projected API access mounts.
  await must(host.kubectl(["-n", PROXY_NAMESPACE, "create", "configmap", "kube-root-ca.crt", "--from-literal=ca.crt=" + host.pki.ca.certPem]), "kube-root-ca.crt ConfigMap");

  log("the hook server, from its Deployment");
  const hookServer = await runPod(host, path.join(dir, "hooks"), { apiVersion: "apps/v1", kind: "Deployment", namespace: HOOKS_NAMESPACE, name: "etcdstorage-hooks" }, "hooks", { 8080: hooksPort });
  const hooksUrl = `http://127.0.0.1:${hooksPort}`;
  await waitFor("hook server /healthz", async () => (await httpGet(`${hooksUrl}/healthz`).catch(() => undefined))?.status === 200, 20_000, () => hookServer.logs());
  const metacontroller = await CompositeControllerStandIn.load(host.api, CONTROLLER, hooksUrl);
  return { dir, host, hookServer, hooksUrl, metacontroller, log };
}

async function must(result: Promise<{ code: number | null; stdout: string; stderr: string }>, what: string): Promise<string> {
  const { code, stdout, stderr } = await result;
  if (code !== 0) throw new Error(`${what} failed (exit ${code}): ${stderr.trim() || stdout.trim()}`);
  return stdout;
}

export async function applyJson(host: HostCluster, object: object): Promise<string> {
  return must(host.kubectl(["apply", "-f", "-"], JSON.stringify(object)), `kubectl apply of ${JSON.stringify((object as KubeObject).metadata)}`);
}

async function waitEstablished(host: HostCluster, crd: string): Promise<void> {
  await must(host.kubectl(["wait", "--for=condition=Established", "--timeout=30s", `crd/${crd}`]), `CRD ${crd} established`);
}

/**
 * README step 3: a kustomization of the admin's own over manifests/, naming the image and the
 * core etcd. The hook server also gets a free port on loopback (PORT, HOST): tests run in parallel.
 */
async function kustomizeInstall(dir: string, host: HostCluster, hooksPort: number): Promise<string> {
  await mkdir(dir, { recursive: true });
  const env = [
    { name: "CORE_ETCD_ENDPOINTS", value: host.core.endpoint },
    { name: "PORT", value: String(hooksPort) },
    { name: "HOST", value: "127.0.0.1" },
  ];
  const kustomization = {
    apiVersion: "kustomize.config.k8s.io/v1beta1",
    kind: "Kustomization",
    resources: [path.relative(dir, MANIFESTS)],
    images: [{ name: "etcdstorage", newName: "registry.example.com/platform/etcdstorage", newTag: "0.1.0" }],
    patches: [{ patch: JSON.stringify({ apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "etcdstorage-hooks", namespace: HOOKS_NAMESPACE }, spec: { template: { spec: { containers: [{ name: "hooks", env }] } } } }) }],
  };
  await writeFile(path.join(dir, "kustomization.yaml"), JSON.stringify(kustomization, null, 2));
  return must(runPart(part("kustomize"), ["build", dir], { cwd: dir }), "kustomize build");
}

interface ObjectRef {
  apiVersion: string;
  kind: string;
  namespace: string;
  name: string;
}

/**
 * What the kubelet would run for one replica of a Deployment (or the pod of a Job, or of a
 * CronJob's Job), as the API server holds it: the container's command (the image's, where it names
 * none), args and env, its Secrets and ConfigMaps read from the API server as files, a projected
 * service account token issued by the API server (a TokenRequest, as the kubelet makes), the API
 * server's address in KUBERNETES_SERVICE_HOST and _PORT, container ports on free local ports.
 */
export async function runPod(host: HostCluster, dir: string, ref: ObjectRef, container: string, ports: Record<number, number>, claims: Record<string, string> = {}): Promise<RunningContainer> {
  const owner = await host.api.get<K8sObject & KubeObject>(ref.apiVersion, ref.kind, ref.name, ref.namespace);
  if (owner === undefined) throw new Error(`no ${ref.kind} ${ref.namespace}/${ref.name} in the API server`);
  const podSpec = podSpecOf(owner);
  const objects: K8sObject[] = [];
  for (const kind of ["Secret", "ConfigMap"]) {
    const list = await host.api.call<{ items: K8sObject[] }>("GET", await host.api.collection("v1", kind, ref.namespace));
    objects.push(...list.items.map((item) => ({ ...item, apiVersion: "v1", kind })));
  }
  return runContainer({
    podSpec,
    containerName: container,
    namespace: ref.namespace,
    objects,
    dir,
    binaries: { node: process.execPath, "/usr/local/bin/node": process.execPath, "/usr/local/bin/etcdctl": part("etcdctl-3.6") },
    ports,
    extraPaths: { [IMAGE.workingDir]: REPO_ROOT },
    image: IMAGE,
    claims,
    kubernetes: {
      host: "127.0.0.1",
      port: Number(new URL(host.url).port),
      tokens: async (serviceAccount, projection) => {
        const request = { apiVersion: "authentication.k8s.io/v1", kind: "TokenRequest", spec: { ...(projection.audience ? { audiences: [projection.audience] } : {}), expirationSeconds: projection.expirationSeconds ?? 3600 } };
        const issued = await host.api.call<{ status: { token: string } }>("POST", `${host.api.resourcePath("v1", "serviceaccounts", ref.namespace)}/${serviceAccount}/token`, request);
        return issued.status.token;
      },
    },
  });
}

/** What the Deployment controller writes once its pods are ready (one process stands for every replica). */
export async function markDeploymentAvailable(host: HostCluster, namespace: string, name: string): Promise<void> {
  const deployment = await host.api.get("apps/v1", "Deployment", name, namespace);
  if (deployment === undefined) throw new Error(`no Deployment ${namespace}/${name}`);
  const replicas = ((deployment.spec as { replicas?: number }).replicas ?? 1) as number;
  const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  const status = {
    observedGeneration: deployment.metadata.generation,
    replicas,
    updatedReplicas: replicas,
    readyReplicas: replicas,
    availableReplicas: replicas,
    conditions: [
      { type: "Available", status: "True", reason: "MinimumReplicasAvailable", message: "Deployment has minimum availability.", lastUpdateTime: now, lastTransitionTime: now },
      { type: "Progressing", status: "True", reason: "NewReplicaSetAvailable", message: `ReplicaSet "${name}" has successfully progressed.`, lastUpdateTime: now, lastTransitionTime: now },
    ],
  };
  await host.api.call("PUT", `${await host.api.objectPath(deployment)}/status`, { ...deployment, status });
}

/**
 * What the Job controller and the kubelet leave of a Job's pod once its container `container` has
 * exited: the Pod, from the Job's template, with its terminated state and termination message.
 */
export async function recordJobPod(host: HostCluster, namespace: string, jobName: string, container: string, run: { code: number | null; message: string; started: Date }): Promise<KubeObject> {
  const job = await host.api.get("batch/v1", "Job", jobName, namespace);
  if (job === undefined) throw new Error(`no Job ${namespace}/${jobName}`);
  const template = (job.spec as { template: { metadata?: { labels?: Record<string, string> }; spec: Record<string, unknown> } }).template;
  const time = (date: Date) => date.toISOString().replace(/\.\d+Z$/, "Z");
  const name = `${jobName}-${Math.random().toString(36).slice(2, 7)}`;
  // The service account controller's part: every namespace has a ServiceAccount default, which
  // admission looks up for any pod (its token is not mounted: automountServiceAccountToken false).
  if ((await host.api.get("v1", "ServiceAccount", "default", namespace)) === undefined) {
    await host.api.call("POST", host.api.resourcePath("v1", "serviceaccounts", namespace), { apiVersion: "v1", kind: "ServiceAccount", metadata: { name: "default", namespace } });
  }
  const pod = await host.api.call<KubeObject>("POST", host.api.resourcePath("v1", "pods", namespace), {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace, labels: { ...template.metadata?.labels, "batch.kubernetes.io/job-name": jobName, "job-name": jobName } },
    spec: template.spec,
  });
  const containerSpec = (template.spec.containers as Array<{ name: string; image: string }>).find((c) => c.name === container)!;
  const exitCode = run.code ?? 137;
  const status = {
    phase: exitCode === 0 ? "Succeeded" : "Failed",
    startTime: time(run.started),
    containerStatuses: [
      {
        name: container,
        image: containerSpec.image,
        imageID: "",
        ready: false,
        restartCount: 0,
        started: false,
        state: { terminated: { exitCode, reason: exitCode === 0 ? "Completed" : "Error", message: run.message, startedAt: time(run.started), finishedAt: time(new Date()) } },
      },
    ],
  };
  return host.api.call<KubeObject>("PUT", `${host.api.resourcePath("v1", "pods", namespace)}/${name}/status`, { ...pod, status });
}

/** What the Job controller writes once the Job's pod has exited 0. */
export async function markJobComplete(host: HostCluster, namespace: string, name: string, started: Date): Promise<void> {
  const job = await host.api.get("batch/v1", "Job", name, namespace);
  if (job === undefined) throw new Error(`no Job ${namespace}/${name}`);
  const time = (date: Date) => date.toISOString().replace(/\.\d+Z$/, "Z");
  const done = time(new Date());
  const status = {
    startTime: time(started),
    completionTime: done,
    succeeded: 1,
    ready: 0,
    terminating: 0,
    uncountedTerminatedPods: {},
    conditions: [
      { type: "SuccessCriteriaMet", status: "True", reason: "CompletionsReached", message: "Reached expected number of succeeded pods", lastProbeTime: done, lastTransitionTime: done },
      { type: "Complete", status: "True", reason: "CompletionsReached", message: "Reached expected number of succeeded pods", lastProbeTime: done, lastTransitionTime: done },
    ],
  };
  await host.api.call("PUT", `${await host.api.objectPath(job)}/status`, { ...job, status });
}

/**
 * One pod of a Job, run to its end: its container from the Job the API server holds (runPod), the
 * Pod with its termination message as the kubelet leaves it, and, when it exited 0, the Job's
 * completion as the Job controller writes it.
 */
export async function runJob(host: HostCluster, dir: string, name: string, container: string, claims: Record<string, string> = {}) {
  const started = new Date();
  const run = await runPod(host, dir, { apiVersion: "batch/v1", kind: "Job", namespace: PROXY_NAMESPACE, name }, container, {}, claims);
  const exit = await run.exited;
  const message = await run.terminationMessage();
  await recordJobPod(host, PROXY_NAMESPACE, name, container, { code: exit.code, message, started });
  if (exit.code === 0) await markJobComplete(host, PROXY_NAMESPACE, name, started);
  return { exit, message, started, logs: run.logs() };
}

/** What the Job controller writes once a pod's exit code matched a FailJob rule of its podFailurePolicy. */
export async function markJobFailed(host: HostCluster, namespace: string, name: string, started: Date, message: string): Promise<void> {
  const job = await host.api.get("batch/v1", "Job", name, namespace);
  if (job === undefined) throw new Error(`no Job ${namespace}/${name}`);
  const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  const failed = (type: string) => ({ type, status: "True", reason: "PodFailurePolicy", message, lastProbeTime: now, lastTransitionTime: now });
  const status = { startTime: started.toISOString().replace(/\.\d+Z$/, "Z"), failed: 1, ready: 0, terminating: 0, uncountedTerminatedPods: {}, conditions: [failed("FailureTarget"), failed("Failed")] };
  await host.api.call("PUT", `${await host.api.objectPath(job)}/status`, { ...job, status });
}

/** The garbage collector's part: every object of the child types that `uid` owned is deleted. */
export async function collectGarbage(system: RunningSystem, uid: string): Promise<string[]> {
  const deleted: string[] = [];
  for (const child of system.metacontroller.controller.spec.childResources) {
    const list = await system.host.api.call<{ kind: string; items: KubeObject[] }>("GET", `${system.host.api.resourcePath(child.apiVersion, child.resource)}?labelSelector=controller-uid%3D${uid}`);
    for (const item of list.items) {
      await system.host.api.delete({ ...item, apiVersion: child.apiVersion, kind: list.kind.replace(/List$/, "") }, { propagationPolicy: "Background" });
      deleted.push(`${list.kind.replace(/List$/, "")} ${item.metadata.namespace}/${item.metadata.name}`);
    }
  }
  return deleted;
}

export interface RunningTenant {
  name: string;
  /** The last reconciliation's request and answer. */
  last: Reconciled;
  gateway: RunningContainer;
  /** https://127.0.0.1:<port>: the tenant Service's address on this machine. */
  endpoint: string;
}

/**
 * Reconciles the EtcdStorage `name` (which must exist) until its children exist, runs its gateway
 * from the Deployment the API server holds, marks that Deployment available, and reconciles again.
 */
export async function startTenant(system: RunningSystem, name: string, dir: string): Promise<RunningTenant> {
  const { host, metacontroller, log } = system;
  log(`EtcdStorage ${name}: sync`);
  await metacontroller.reconcile(name);
  log(`EtcdStorage ${name}: its gateway, from the Deployment the hooks returned`);
  const clientPort = await freePort();
  const healthPort = await freePort();
  const gateway = await runPod(host, dir, { apiVersion: "apps/v1", kind: "Deployment", namespace: PROXY_NAMESPACE, name: `etcd-${name}` }, "gateway", { 2379: clientPort, 2381: healthPort });
  await waitFor(`gateway of ${name} ready`, async () => (await httpGet(`http://127.0.0.1:${healthPort}/readyz`).catch(() => undefined))?.status === 200, 30_000, () => gateway.logs());
  await markDeploymentAvailable(host, PROXY_NAMESPACE, `etcd-${name}`);
  const last = await metacontroller.reconcile(name);
  return { name, last, gateway, endpoint: `https://127.0.0.1:${clientPort}` };
}

export interface SampleApiserver {
  process: ManagedProcess;
  port: number;
}

/**
 * sample-apiserver with the README's step 6 flags, its etcd credentials read from the Secret and
 * ConfigMap the hooks delivered into `namespace`, delegating authentication and authorization to
 * the host, and registered with the host's aggregator (APIService v1alpha1.wardle.example.com).
 * `--etcd-servers` names the tenant Service's address on this machine (no DNS here).
 */
export async function startSampleApiserver(system: RunningSystem, tenant: RunningTenant, options: { namespace: string; secret: string; configMap: string; dir: string }): Promise<SampleApiserver> {
  const { host, log } = system;
  log("sample-apiserver, through the gateway");
  const dir = options.dir;
  const etcdDir = path.join(dir, "etcd-client");
  await mkdir(etcdDir, { recursive: true });
  const secret = await host.api.get("v1", "Secret", options.secret, options.namespace);
  const configMap = await host.api.get("v1", "ConfigMap", options.configMap, options.namespace);
  if (secret === undefined || configMap === undefined) throw new Error(`the hooks delivered no Secret ${options.secret} or ConfigMap ${options.configMap} into ${options.namespace}`);
  const data = secret.data as Record<string, string>;
  for (const file of ["tls.crt", "tls.key"]) await writeFile(path.join(etcdDir, file), Buffer.from(data[file]!, "base64"), { mode: 0o600 });
  // The CA from the ConfigMap, which must be the Secret's ca.crt too.
  await writeFile(path.join(etcdDir, "ca.crt"), (configMap.data as Record<string, string>)["ca.crt"]!, { mode: 0o600 });

  // Its serving certificate, for the name the aggregator checks (<service>.<namespace>.svc).
  const validity = { notBefore: new Date(Date.now() - 3600_000), notAfter: new Date(Date.now() + 24 * 3600_000) };
  const ca = await issueCa({ commonName: "wardle serving CA" }, validity);
  const serving = await issueLeaf({ subject: { commonName: "api.wardle.svc" }, usage: "server", dnsNames: ["api.wardle.svc", "localhost"], ipAddresses: ["127.0.0.1"] }, validity, ca);
  await writeFile(path.join(dir, "serving.crt"), serving.certPem, { mode: 0o600 });
  await writeFile(path.join(dir, "serving.key"), serving.keyPem, { mode: 0o600 });

  const port = await freePort();
  const process_ = spawnManaged(
    part("sample-apiserver"),
    [
      `--etcd-servers=${tenant.endpoint}`,
      `--etcd-cafile=${path.join(etcdDir, "ca.crt")}`,
      `--etcd-certfile=${path.join(etcdDir, "tls.crt")}`,
      `--etcd-keyfile=${path.join(etcdDir, "tls.key")}`,
      "--etcd-compaction-interval=0",
      "--bind-address=127.0.0.1",
      `--secure-port=${port}`,
      `--tls-cert-file=${path.join(dir, "serving.crt")}`,
      `--tls-private-key-file=${path.join(dir, "serving.key")}`,
      `--cert-dir=${path.join(dir, "cert-dir")}`,
      `--kubeconfig=${host.kubeconfig}`,
      `--authentication-kubeconfig=${host.kubeconfig}`,
      `--authorization-kubeconfig=${host.kubeconfig}`,
    ],
    { cwd: dir, env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } },
  );
  const probe = new KubeApi(`https://127.0.0.1:${port}`, { ca: ca.certPem, cert: host.pki.admin.certPem, key: host.pki.admin.keyPem });
  await waitFor("sample-apiserver /readyz", async () => {
    if (process_.process.exitCode !== null) throw new GiveUp(`sample-apiserver exited with code ${process_.process.exitCode}`);
    return (await probe.request("GET", "/readyz")).status === 200;
  }, 60_000, () => process_.logs());
  probe.close();

  log("APIService v1alpha1.wardle.example.com");
  await applyJson(host, { apiVersion: "v1", kind: "Namespace", metadata: { name: "wardle" } });
  await applyJson(host, { apiVersion: "v1", kind: "Service", metadata: { name: "api", namespace: "wardle" }, spec: { type: "ExternalName", externalName: "localhost", ports: [{ port, protocol: "TCP" }] } });
  await applyJson(host, {
    apiVersion: "apiregistration.k8s.io/v1",
    kind: "APIService",
    metadata: { name: "v1alpha1.wardle.example.com" },
    spec: { group: "wardle.example.com", version: "v1alpha1", groupPriorityMinimum: 1000, versionPriority: 15, service: { namespace: "wardle", name: "api", port }, caBundle: Buffer.from(ca.certPem).toString("base64") },
  });
  // Through the host: the aggregator routes to this sample-apiserver (an earlier one may have had the APIService).
  await waitFor("Flunders served through the host", async () => (await host.api.request("GET", "/apis/wardle.example.com/v1alpha1/flunders")).status === 200, 60_000, () => process_.logs());
  return { process: process_, port };
}
