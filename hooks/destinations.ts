// Which destination namespaces can receive the tenant's credentials, from the Namespaces /customize
// asked Metacontroller for. An object sent into a namespace that does not exist (or is being
// deleted) fails Metacontroller's whole apply, and the tenant's status would never say why: such
// destinations are left out and named instead, and the others are delivered.
import type { ConditionInput } from "./status.ts";
import { NAMESPACE_TYPE, type ObjectsByType } from "./observed.ts";
import { destinationNamespaces, type Destination, type EtcdStorageSpec } from "./spec.ts";

export interface DestinationsCheck {
  condition: ConditionInput;
  /** The spec's destinations that are delivered. */
  deliverable: Pick<EtcdStorageSpec, "caCertConfigMap" | "clientCertSecret">;
}

export function checkDestinations(spec: EtcdStorageSpec, related: ObjectsByType | undefined): DestinationsCheck {
  const type = "DestinationsReady";
  const namespaces = destinationNamespaces(spec);
  const observed = related?.[NAMESPACE_TYPE.key];
  if (namespaces.length === 0) {
    return { condition: { type, status: "True", reason: "NoDestinations", message: "spec.caCertConfigMap and spec.clientCertSecret are empty" }, deliverable: spec };
  }
  // Without the Namespaces, Metacontroller still holds a /customize answer from before they were
  // asked for (it keeps one per generation for up to 20 minutes): deliver as before, and say so.
  if (!observed) {
    return {
      condition: { type, status: "Unknown", reason: "NamespacesNotObserved", message: `Metacontroller sent no Namespaces (its cached /customize answer predates them; it asks again within 20 minutes or when the spec changes): credentials are sent to ${namespaces.join(", ")} unchecked` },
      deliverable: spec,
    };
  }
  const missing = namespaces.filter((name) => !observed[name]);
  const deleting = namespaces.filter((name) => observed[name]?.metadata.deletionTimestamp);
  const usable = (d: Destination) => !missing.includes(d.namespace) && !deleting.includes(d.namespace);
  const deliverable = { caCertConfigMap: spec.caCertConfigMap.filter(usable), clientCertSecret: spec.clientCertSecret.filter(usable) };
  if (missing.length === 0 && deleting.length === 0) {
    return { condition: { type, status: "True", reason: "DestinationsDelivered", message: `credentials delivered to ${plural(namespaces.length, "namespace")} ${namespaces.join(", ")}` }, deliverable };
  }
  const problems = [
    ...(missing.length > 0 ? [`${plural(missing.length, "namespace")} ${missing.join(", ")} ${missing.length === 1 ? "does" : "do"} not exist: create ${missing.length === 1 ? "it" : "them"} or remove ${missing.length === 1 ? "its" : "their"} destinations`] : []),
    ...(deleting.length > 0 ? [`${plural(deleting.length, "namespace")} ${deleting.join(", ")} ${deleting.length === 1 ? "is" : "are"} being deleted`] : []),
  ];
  const delivered = destinationNamespaces(deliverable);
  return {
    condition: {
      type,
      status: "False",
      reason: missing.length > 0 ? "NamespaceNotFound" : "NamespaceTerminating",
      message: `${problems.join("; ")}. Nothing is sent there; ${delivered.length > 0 ? `the destinations in ${delivered.join(", ")} are delivered` : "no destination is delivered"}`,
    },
    deliverable,
  };
}

function plural(count: number, noun: string): string {
  return count === 1 ? noun : `${count} ${noun}s`;
}
