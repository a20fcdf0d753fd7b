// The tenant's PKI as children: two CA Secrets (serving, client) that carry their own rotation
// state, the proxy's serving certificate, the trusted client-CA bundle, and what each destination
// namespace receives. CA private keys stay in the proxy namespace.
import type { Config } from "../config.ts";
import { childLabels, serviceHost, tenantNames } from "../names.ts";
import { findObject, secretData, type KubeObject, type ObjectsByType } from "../observed.ts";
import { reconcileCa, type CaPlan, type CaStep } from "../pki/ca.ts";
import type { LeafProfile } from "../pki/issue.ts";
import { reconcileLeaf, type LeafPlan, type ReissueReason } from "../pki/leaf.ts";
import type { Destination, EtcdStorageSpec } from "../spec.ts";
import { rfc3339 } from "../time.ts";
import { configMap, secret } from "./objects.ts";

export interface CertificateStatus {
  name: string;
  role: "Issuing" | "Successor" | "Retired" | "Leaf";
  secret: string;
  notAfter: string;
  renewAt: string;
}

export interface IssuanceEvent {
  certificate: "serving-ca" | "client-ca" | "serving" | "client";
  what: CaStep["kind"] | ReissueReason;
  message: string;
}

export interface CertificatesPlan {
  children: KubeObject[];
  certificates: CertificateStatus[];
  degraded: string[];
  rotating: string[];
  nextStepAt: Date;
  events: IssuanceEvent[];
}

export async function planCertificates(tenant: string, spec: EtcdStorageSpec, config: Config, observed: ObjectsByType, now: Date): Promise<CertificatesPlan> {
  const names = tenantNames(tenant);
  const ns = config.proxyNamespace;
  const events: IssuanceEvent[] = [];
  const certificates: CertificateStatus[] = [];
  const degraded: string[] = [];
  const rotating: string[] = [];
  const children: KubeObject[] = [];

  const planCa = async (certificate: "serving-ca" | "client-ca", name: string, role: string): Promise<CaPlan> => {
    const plan = await reconcileCa({
      observed: secretData(findObject(observed, "Secret", ns, name)),
      subject: { commonName: `etcd-${tenant} ${role} CA`, organization: "etcdproxy.dev" },
      validityMs: spec.signingCertificateValidity,
      now,
    });
    children.push(secret({ name, namespace: ns, labels: childLabels(tenant, certificate) }, plan.data));
    for (const step of plan.steps) events.push({ certificate, what: step.kind, message: step.message });
    for (const entry of plan.entries) certificates.push(status(certificate, entry.role, `${ns}/${name}`, entry.cert.notAfter, entry.renewAt));
    if (plan.degraded) degraded.push(`${certificate}: the issuing CA in Secret ${ns}/${name} cannot sign (damaged or key mismatch); a successor is published and takes over after the overlap`);
    if (plan.entries.some((entry) => entry.role === "Successor")) rotating.push(certificate);
    return plan;
  };

  const planLeaf = async (certificate: "serving" | "client", secretName: string, namespace: string, profile: LeafProfile, validityMs: number, ca: CaPlan): Promise<LeafPlan> => {
    const data = secretData(findObject(observed, "Secret", namespace, secretName));
    const leaf = await reconcileLeaf({ observed: { certPem: data["tls.crt"], keyPem: data["tls.key"] }, profile, validityMs, ca, now });
    if (leaf.reissued) events.push({ certificate, what: leaf.reissued, message: `issued ${certificate} certificate for ${namespace}/${secretName} (${leaf.reissued})` });
    certificates.push(status(certificate, "Leaf", `${namespace}/${secretName}`, leaf.cert.notAfter, leaf.renewAt));
    return leaf;
  };

  const servingCa = await planCa("serving-ca", names.servingCa, "serving");
  const clientCa = await planCa("client-ca", names.clientCa, "client");

  const serving = await planLeaf("serving", names.serverTls, ns, servingProfile(tenant, config), spec.servingCertificateValidity, servingCa);
  children.push(secret({ name: names.serverTls, namespace: ns, labels: childLabels(tenant, "server-tls") }, { "tls.crt": serving.certPem, "tls.key": serving.keyPem }));
  children.push(configMap({ name: names.trustedCa, namespace: ns, labels: childLabels(tenant, "trusted-ca") }, { "ca.crt": clientCa.bundlePem }));

  for (const destination of spec.caCertConfigMap) {
    children.push(configMap(destinationPlacement(tenant, destination), { "ca.crt": servingCa.bundlePem }));
  }
  for (const destination of spec.clientCertSecret) {
    const leaf = await planLeaf("client", destination.name, destination.namespace, clientProfile(tenant, destination), spec.clientCertificateValidity, clientCa);
    children.push(secret(destinationPlacement(tenant, destination), { "tls.crt": leaf.certPem, "tls.key": leaf.keyPem, "ca.crt": servingCa.bundlePem }));
  }

  const upcoming = [servingCa.nextStepAt, clientCa.nextStepAt, ...certificates.filter((c) => c.role === "Leaf").map((c) => new Date(c.renewAt))];
  return {
    children,
    certificates,
    degraded,
    rotating,
    nextStepAt: new Date(Math.min(...upcoming.map((t) => t.getTime()))),
    events,
  };
}

export function servingProfile(tenant: string, config: Config): LeafProfile {
  const host = serviceHost(tenant, config.proxyNamespace);
  const proxy = tenantNames(tenant).proxy;
  return {
    subject: { commonName: proxy, organization: "etcdproxy.dev" },
    usage: "server",
    dnsNames: [proxy, `${proxy}.${config.proxyNamespace}`, host, `${host}.${config.clusterDomain}`, "localhost"],
    ipAddresses: ["127.0.0.1"],
  };
}

export function clientProfile(tenant: string, destination: Destination): LeafProfile {
  // CN and O stay within X.509's 64-character bounds whatever the destination's name.
  return { subject: { commonName: `etcd-${tenant}-client`, organization: destination.namespace }, usage: "client", dnsNames: [], ipAddresses: [] };
}

function destinationPlacement(tenant: string, destination: Destination) {
  return { name: destination.name, namespace: destination.namespace, labels: childLabels(tenant, "credentials") };
}

function status(name: string, role: CertificateStatus["role"], secretRef: string, notAfter: Date, renewAt: Date): CertificateStatus {
  return { name, role, secret: secretRef, notAfter: rfc3339(notAfter), renewAt: rfc3339(renewAt) };
}
