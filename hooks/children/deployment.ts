// The tenant's etcd grpc-proxy, behind the gateway (gateway.ts) unless the hook configuration turns
// the API allowlist off. Every flag is written --flag=value so that tests can run the exact
// command line against real etcd.
import { createHash } from "node:crypto";
import type { Config } from "../config.ts";
import { childLabels, CLIENT_PORT, proxySelector, serviceHost, tenantNames, tenantPrefix, TRUST_CHECKSUM_ANNOTATION } from "../names.ts";
import type { KubeObject } from "../observed.ts";
import type { EtcdStorageSpec } from "../spec.ts";
import { gatewayContainer, gatewayVolumes, UPSTREAM_PORT } from "./gateway.ts";
import { configMapVolume, coreCredentialMounts, coreCredentialVolumes, coreEtcdFlags, restrictedContainerSecurity, restrictedPodSecurity, secretVolume } from "./pod.ts";

export const METRICS_PORT = 2381;
const ETCD_BINARY = "/usr/local/bin/etcd";

const MOUNTS = {
  serverTls: "/etc/etcd-proxy/server-tls",
  trustedCa: "/etc/etcd-proxy/trusted-ca",
  data: "/var/lib/etcd-proxy",
} as const;

export interface StartupMaterial {
  trustedClientCaPem: string;
  coreCaPem: string;
  coreClientCertPem: string;
  /** With the gateway: nginx reads its configuration only at start too. */
  nginxConfig?: string;
}

/**
 * The pods read their trusted client-CA bundle, their etcd credentials and the gateway's nginx
 * configuration only at start: the pod template carries a checksum of exactly that material, so
 * a change rolls the pods, and nothing else does (serving certificates are read at each handshake).
 */
export function trustChecksum(material: StartupMaterial): string {
  const hash = createHash("sha256");
  const parts = [material.trustedClientCaPem, material.coreCaPem, material.coreClientCertPem];
  // Without the gateway the checksum stays what it always was: turning nothing on rolls nothing.
  if (material.nginxConfig !== undefined) parts.push(material.nginxConfig);
  for (const part of parts) hash.update(part).update("\0");
  return hash.digest("hex");
}

export function proxyCommand(tenant: string, config: Config): string[] {
  // Behind the gateway the proxy serves plain gRPC on the pod's loopback: only containers of the
  // same pod reach it, and nginx has already checked the client certificate.
  const listener = config.tenantApiAllowlist
    ? [`--listen-addr=127.0.0.1:${UPSTREAM_PORT}`, `--advertise-client-url=http://127.0.0.1:${UPSTREAM_PORT}`]
    : [
        `--listen-addr=0.0.0.0:${CLIENT_PORT}`,
        `--advertise-client-url=https://${serviceHost(tenant, config.proxyNamespace)}:${CLIENT_PORT}`,
        `--cert-file=${MOUNTS.serverTls}/tls.crt`,
        `--key-file=${MOUNTS.serverTls}/tls.key`,
        `--trusted-ca-file=${MOUNTS.trustedCa}/ca.crt`,
      ];
  return [
    ETCD_BINARY,
    "grpc-proxy",
    "start",
    ...coreEtcdFlags(config),
    `--namespace=${tenantPrefix(config.tenantPrefixRoot, tenant)}`,
    ...listener,
    `--metrics-addr=http://0.0.0.0:${METRICS_PORT}`,
    `--data-dir=${MOUNTS.data}`,
  ];
}

export function buildDeployment(tenant: string, spec: EtcdStorageSpec, config: Config, checksum: string): KubeObject {
  const names = tenantNames(tenant);
  const labels = childLabels(tenant, "proxy");
  const gateway = config.tenantApiAllowlist;
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: names.proxy, namespace: config.proxyNamespace, labels },
    spec: {
      replicas: spec.replicas,
      revisionHistoryLimit: 3,
      selector: { matchLabels: proxySelector(tenant) },
      // Never fewer ready proxies than asked for while a new trust bundle rolls out.
      strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
      template: {
        metadata: { labels, annotations: { [TRUST_CHECKSUM_ANNOTATION]: checksum } },
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
              name: "grpc-proxy",
              image: config.etcdImage,
              imagePullPolicy: "IfNotPresent",
              command: proxyCommand(tenant, config),
              ports: [
                ...(gateway ? [] : [{ name: "client", containerPort: CLIENT_PORT, protocol: "TCP" }]),
                { name: "metrics", containerPort: METRICS_PORT, protocol: "TCP" },
              ],
              // /health goes through to the cluster's etcd: an unready proxy leaves the Service.
              readinessProbe: { httpGet: { path: "/health", port: "metrics" }, periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 3 },
              // Liveness asks only whether the process serves; it must not fail while etcd is briefly down,
              // or every proxy of every tenant restarts at once.
              livenessProbe: { tcpSocket: { port: "metrics" }, initialDelaySeconds: 10, periodSeconds: 20, timeoutSeconds: 5, failureThreshold: 3 },
              resources: spec.resources,
              securityContext: restrictedContainerSecurity,
              volumeMounts: [
                ...coreCredentialMounts(),
                ...(gateway
                  ? []
                  : [
                      { name: "server-tls", mountPath: MOUNTS.serverTls, readOnly: true },
                      { name: "trusted-ca", mountPath: MOUNTS.trustedCa, readOnly: true },
                    ]),
                { name: "data", mountPath: MOUNTS.data },
              ],
            },
            ...(gateway ? [gatewayContainer(config)] : []),
          ],
          volumes: [
            ...coreCredentialVolumes(config),
            ...(gateway ? gatewayVolumes(tenant) : [secretVolume("server-tls", names.serverTls), configMapVolume("trusted-ca", names.trustedCa)]),
            { name: "data", emptyDir: { sizeLimit: "64Mi" } },
          ],
        },
      },
    },
  };
}
