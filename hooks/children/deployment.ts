// The tenant's proxy: a Deployment of the tenant gateway (gateway/main.ts, compiled to
// dist/gateway/main.js when the image is built), run from the project's own image (the hook
// server's), one container per pod. The gateway re-reads its certificates and
// core credentials when the mounted files change, so nothing here rolls the pods for them. Every
// flag is written --flag=value so that tests can run the exact command line against real etcd.
import type { Config } from "../config.ts";
import { childLabels, CLIENT_PORT, proxySelector, tenantNames, tenantPrefix } from "../names.ts";
import type { KubeObject } from "../observed.ts";
import { parseQuantity } from "../quantity.ts";
import type { EtcdStorageSpec, ResourceRequirements } from "../spec.ts";
import { configMapVolume, coreCredentialMounts, coreCredentialVolumes, coreEtcdFlags, restrictedContainerSecurity, restrictedPodSecurity, secretVolume } from "./pod.ts";

/** Plain HTTP: /livez, /readyz and /metrics, for the kubelet and Prometheus. */
export const HEALTH_PORT = 2381;
// The node image's binary, and the image's working directory, which mirrors the repository.
const NODE_BINARY = "/usr/local/bin/node";
const APP_DIR = "/app";
/** The gateway as the image builds it (Dockerfile, tsconfig.build.json), relative to APP_DIR. */
const GATEWAY_ENTRY = "dist/gateway/main.js";

const MOUNTS = {
  serverTls: "/etc/etcd-gateway/server-tls",
  trustedCa: "/etc/etcd-gateway/trusted-ca",
} as const;

// Two V8 settings for a process that moves 100 KiB answers through Buffers (external memory),
// measured in `npm run bench` (README, Data-path performance):
// - the young generation: V8 sizes it from the container's memory limit, a few MiB in a 256Mi pod,
//   which sent the answers of a paged list through major collections. A sixteenth of the limit,
//   at most 16 MiB.
// - external memory counted in the heap's global limit: otherwise every 64 MiB of Buffers forces
//   a full collection (one every ~50 ms under list), a third of the gateway's CPU.
const MAX_SEMI_SPACE_MIB = 16;
const MEMORY_PER_SEMI_SPACE = 16;
// One V8 worker thread instead of Node's four: each thread that compiles or collects in the
// background grows memory of its own, which an idle gateway kept (65.8 MiB after 7 minutes idle,
// 64.9 with one; CPU per call unchanged under the data-path benchmark's loads). Running V8 on the
// main thread alone (--single-threaded) saved a MiB more and cost a fifth more CPU per list page.
const V8_POOL = "--v8-pool-size=1";
// gc() for the one major collection that starts V8's memory reducer in a gateway idle since its
// start (gateway/shell/memory-reducer.ts).
const EXPOSE_GC = "--expose-gc";

export function gatewayCommand(resources: ResourceRequirements): string[] {
  const limit = resources.limits?.memory;
  const limitMiB = limit === undefined ? Infinity : Number(parseQuantity(limit)!.floor() >> 20n);
  const semiSpaceMiB = Math.max(1, Math.min(MAX_SEMI_SPACE_MIB, Math.floor(limitMiB / MEMORY_PER_SEMI_SPACE)));
  // JavaScript, not the TypeScript: stripping types at every start loaded the stripper into every
  // proxy pod (29 MiB of an idle gateway's memory; README: Sizing).
  return [NODE_BINARY, V8_POOL, `--max-semi-space-size=${semiSpaceMiB}`, "--external-memory-accounted-in-global-limit", EXPOSE_GC, GATEWAY_ENTRY];
}

export function gatewayArgs(tenant: string, spec: Pick<EtcdStorageSpec, "quota" | "replicas">, config: Config): string[] {
  return [
    `--tenant=${tenant}`,
    `--prefix=${tenantPrefix(config.tenantPrefixRoot, tenant)}`,
    ...coreEtcdFlags(config),
    `--listen-address=0.0.0.0:${CLIENT_PORT}`,
    `--health-address=0.0.0.0:${HEALTH_PORT}`,
    `--cert-file=${MOUNTS.serverTls}/tls.crt`,
    `--key-file=${MOUNTS.serverTls}/tls.key`,
    `--trusted-ca-file=${MOUNTS.trustedCa}/ca.crt`,
    `--quota-storage-bytes=${spec.quota.storage.bytes}`,
    `--quota-write-bytes-per-second=${spec.quota.writeBytesPerSecond.bytes}`,
    `--quota-requests-per-second=${spec.quota.requestsPerSecond}`,
    // Each gateway takes its share of the tenant's rates: a change of replicas restarts them.
    `--replicas=${spec.replicas}`,
  ];
}

export function buildDeployment(tenant: string, spec: EtcdStorageSpec, config: Config): KubeObject {
  const names = tenantNames(tenant);
  const labels = childLabels(tenant, "proxy");
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: names.proxy, namespace: config.proxyNamespace, labels },
    spec: {
      replicas: spec.replicas,
      revisionHistoryLimit: 3,
      selector: { matchLabels: proxySelector(tenant) },
      // Never fewer ready gateways than asked for during a rollout.
      strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
      template: {
        metadata: { labels },
        spec: {
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          securityContext: restrictedPodSecurity,
          topologySpreadConstraints: [
            { maxSkew: 1, topologyKey: "kubernetes.io/hostname", whenUnsatisfiable: "ScheduleAnyway", labelSelector: { matchLabels: proxySelector(tenant) } },
            { maxSkew: 1, topologyKey: "topology.kubernetes.io/zone", whenUnsatisfiable: "ScheduleAnyway", labelSelector: { matchLabels: proxySelector(tenant) } },
          ],
          containers: [
            {
              name: "gateway",
              image: config.gatewayImage,
              imagePullPolicy: "IfNotPresent",
              command: gatewayCommand(spec.resources),
              args: gatewayArgs(tenant, spec, config),
              workingDir: APP_DIR,
              ports: [
                { name: "client", containerPort: CLIENT_PORT, protocol: "TCP" },
                { name: "health", containerPort: HEALTH_PORT, protocol: "TCP" },
              ],
              // /readyz reads through to core etcd: a gateway that cannot reach it leaves the Service.
              readinessProbe: { httpGet: { path: "/readyz", port: "health" }, periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 3 },
              // /livez asks only whether the process serves: it must not fail while etcd is briefly
              // down, or every gateway of every tenant restarts at once.
              livenessProbe: { httpGet: { path: "/livez", port: "health" }, initialDelaySeconds: 10, periodSeconds: 20, timeoutSeconds: 5, failureThreshold: 3 },
              resources: spec.resources,
              securityContext: restrictedContainerSecurity,
              volumeMounts: [
                ...coreCredentialMounts(),
                { name: "server-tls", mountPath: MOUNTS.serverTls, readOnly: true },
                { name: "trusted-ca", mountPath: MOUNTS.trustedCa, readOnly: true },
              ],
            },
          ],
          volumes: [...coreCredentialVolumes(config), secretVolume("server-tls", names.serverTls), configMapVolume("trusted-ca", names.trustedCa)],
        },
      },
    },
  };
}
