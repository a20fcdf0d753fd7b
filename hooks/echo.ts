// Keeping observed children as they are: Metacontroller deletes every child an answer omits, so an
// answer that cannot be computed (an invalid spec) must return what exists, unchanged.
import type { KubeObject, ObjectsByType } from "./observed.ts";
import { allObjects } from "./observed.ts";

const LAST_APPLIED = "metacontroller.k8s.io/last-applied-configuration";
const SERVER_FIELDS = ["uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "ownerReferences", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"];

/** The last desired state of each observed child (Metacontroller's annotation), or the object less what the server owns. */
export function echoChildren(children: ObjectsByType): KubeObject[] {
  return allObjects(children).map(desiredFromObserved);
}

export function desiredFromObserved(observed: KubeObject): KubeObject {
  const lastApplied = observed.metadata.annotations?.[LAST_APPLIED];
  if (lastApplied) {
    try {
      const parsed = JSON.parse(lastApplied) as KubeObject;
      if (parsed?.metadata?.name === observed.metadata.name) return { ...parsed, metadata: { ...parsed.metadata, namespace: observed.metadata.namespace } };
    } catch {
      // fall through: rebuild from the object itself
    }
  }
  const { status: _status, ...object } = structuredClone(observed);
  for (const field of SERVER_FIELDS) delete object.metadata[field];
  if (object.metadata.annotations) {
    delete object.metadata.annotations[LAST_APPLIED];
    if (Object.keys(object.metadata.annotations).length === 0) delete object.metadata.annotations;
  }
  return object;
}
