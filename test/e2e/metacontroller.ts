// What Metacontroller does for one parent of a CompositeController, against a real API server.
// Real Metacontroller cannot be built here (its go.mod declares the module path `metacontroller`,
// which the Go module proxy does not serve), so the tests drive the hooks as it does
// (shared/reference/metacontroller.md, Metacontroller v4.17's composite controller):
//   - the CompositeController is read from the API server, as applied from manifests/;
//   - the parent gets the finalizer `metacontroller.io/compositecontroller-<name>` first;
//   - /customize is asked for related objects, which are read from the API server;
//   - children are those of each declared child resource with the label controller-uid=<uid>
//     (generateSelector), keyed Kind.group/version, then namespace/name (hook version v2);
//   - sync, or finalize once the parent has a deletionTimestamp; the answer is decoded strictly;
//   - every desired child gets the controller-uid label, the owner reference and the
//     last-applied annotation, and is applied; observed children missing from the answer are
//     deleted; the status replaces the parent's, with observedGeneration, through /status;
//   - `finalized: true` removes the finalizer.
// One difference, as the issue allows: children are applied by server-side apply (a forced apply
// by the field manager "metacontroller"), not by Metacontroller's client-side three-way merge.
// Both keep what the server defaulted and change only what the hook sets.
import type { KubeApi, KubeObject } from "./kube.ts";

const LAST_APPLIED = "metacontroller.k8s.io/last-applied-configuration";
const FIELD_MANAGER = "metacontroller";
const RESPONSE_FIELDS = new Set(["status", "children", "resyncAfterSeconds", "finalized"]);

interface ChildResource {
  apiVersion: string;
  resource: string;
  updateStrategy?: { method?: "OnDelete" | "Recreate" | "InPlace" | "RollingRecreate" | "RollingInPlace" };
}

interface Hook {
  version?: string;
  webhook: { url?: string; path?: string; service?: { name: string; namespace: string; port?: number } };
}

export interface CompositeControllerObject extends KubeObject {
  spec: {
    parentResource: { apiVersion: string; resource: string };
    childResources: ChildResource[];
    generateSelector?: boolean;
    hooks: { sync: Hook; finalize?: Hook; customize?: Hook };
  };
}

type ObjectsByType = Record<string, Record<string, KubeObject>>;

export interface HookAnswer {
  status: Record<string, unknown>;
  children: KubeObject[];
  resyncAfterSeconds?: number;
  finalized?: boolean;
}

export interface Reconciled {
  /** The request sent to /sync or /finalize. */
  request: { controller: KubeObject; parent: KubeObject; children: ObjectsByType; related: ObjectsByType; finalizing: boolean };
  answer: HookAnswer;
  /** "Kind namespace/name: created|updated|recreated|deleted" for every child this call changed. */
  changes: string[];
  /** Whether the parent's status was written (it differed from the answer's). */
  statusWritten: boolean;
}

/** Metacontroller's key of an object's type: Kind.version for the core group, Kind.group/version otherwise. */
export function typeKey(apiVersion: string, kind: string): string {
  return `${kind}.${apiVersion}`;
}

function objectKey(object: KubeObject): string {
  return object.metadata.namespace ? `${object.metadata.namespace}/${object.metadata.name}` : object.metadata.name;
}

/** JSON with every object's keys sorted: the same value always gives the same text. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, field: unknown) =>
    field !== null && typeof field === "object" && !Array.isArray(field) ? Object.fromEntries(Object.entries(field).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : field,
  );
}

/** The fields that describe an object's desired content: what an apply can change. */
function content(object: KubeObject): string {
  const { metadata, status: _status, ...rest } = object;
  const { labels, annotations, finalizers, ownerReferences } = metadata;
  return canonical({ rest, labels, annotations, finalizers, ownerReferences });
}

export class CompositeControllerStandIn {
  private readonly api: KubeApi;
  readonly controller: CompositeControllerObject;
  /** The hook server's base URL on this machine (what the webhook's Service would reach). */
  private readonly hookServer: string;

  private constructor(api: KubeApi, controller: CompositeControllerObject, hookServer: string) {
    this.api = api;
    this.controller = controller;
    this.hookServer = hookServer;
  }

  /** The CompositeController `name`, as the API server has it. */
  static async load(api: KubeApi, name: string, hookServer: string): Promise<CompositeControllerStandIn> {
    const controller = await api.get<CompositeControllerObject>("metacontroller.k8s.io/v1alpha1", "CompositeController", name);
    if (controller === undefined) throw new Error(`no CompositeController ${name} in the API server`);
    for (const hook of Object.values(controller.spec.hooks)) {
      if (hook.version !== "v2") throw new Error(`CompositeController ${name}: hook version ${hook.version ?? "v1"} (the stand-in speaks v2 only)`);
    }
    return new CompositeControllerStandIn(api, controller, hookServer);
  }

  private get finalizer(): string {
    return `metacontroller.io/compositecontroller-${this.controller.metadata.name}`;
  }

  private async parentPath(name: string): Promise<string> {
    const { apiVersion, resource } = this.controller.spec.parentResource;
    return `${this.api.resourcePath(apiVersion, resource)}/${name}`;
  }

  private async call<T>(hook: Hook, body: unknown): Promise<T> {
    const url = hook.webhook.url ?? `${this.hookServer}${hook.webhook.path ?? ""}`;
    const response = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), signal: AbortSignal.timeout(10_000) });
    const text = await response.text();
    // Only 200 counts as success; anything else is a SyncError and nothing changes.
    if (response.status !== 200) throw new Error(`hook ${url} answered HTTP ${response.status}: ${text.slice(0, 500)}`);
    return JSON.parse(text) as T;
  }

  private async readRelated(parent: KubeObject): Promise<ObjectsByType> {
    const hook = this.controller.spec.hooks.customize;
    const related: ObjectsByType = {};
    if (hook === undefined) return related;
    const answer = await this.call<{ relatedResources: Array<{ apiVersion: string; resource: string; namespace?: string; names?: string[]; labelSelector?: { matchLabels?: Record<string, string> } }> }>(hook, { controller: this.controller, parent });
    for (const rule of answer.relatedResources) {
      const collection = this.api.resourcePath(rule.apiVersion, rule.resource, rule.namespace);
      const found: KubeObject[] = [];
      if (rule.names !== undefined) {
        for (const name of rule.names) {
          const response = await this.api.request<KubeObject>("GET", `${collection}/${name}`);
          if (response.status === 200) found.push(response.body);
        }
      } else {
        found.push(...(await this.list(rule.apiVersion, collection, rule.labelSelector?.matchLabels)));
      }
      for (const object of found) (related[typeKey(object.apiVersion, object.kind)] ??= {})[objectKey(object)] = object;
    }
    return related;
  }

  /** A list's items, each with the apiVersion and kind a list leaves out. */
  private async list(apiVersion: string, collection: string, labels?: Record<string, string>): Promise<KubeObject[]> {
    const selector = labels === undefined ? "" : `?labelSelector=${encodeURIComponent(Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(","))}`;
    const list = await this.api.call<{ kind: string; items: KubeObject[] }>("GET", `${collection}${selector}`);
    const kind = list.kind.replace(/List$/, "");
    return list.items.map((item) => ({ ...item, apiVersion, kind }));
  }

  private async readChildren(parent: KubeObject): Promise<{ children: ObjectsByType; strategies: Map<string, ChildResource> }> {
    const children: ObjectsByType = {};
    const strategies = new Map<string, ChildResource>();
    for (const child of this.controller.spec.childResources) {
      const items = await this.list(child.apiVersion, this.api.resourcePath(child.apiVersion, child.resource), { "controller-uid": parent.metadata.uid! });
      const kind = items[0]?.kind ?? (await this.api.kindOf(child.apiVersion, child.resource));
      const key = typeKey(child.apiVersion, kind);
      strategies.set(key, child);
      children[key] = Object.fromEntries(items.map((item) => [objectKey(item), item]));
    }
    return { children, strategies };
  }

  /** One reconciliation of the parent `name`, as Metacontroller runs it on every change. */
  async reconcile(name: string): Promise<Reconciled> {
    const parentPath = await this.parentPath(name);
    let parent = await this.api.call<KubeObject>("GET", parentPath);
    const finalizing = parent.metadata.deletionTimestamp !== undefined;
    const finalizeHook = this.controller.spec.hooks.finalize;
    if (finalizeHook !== undefined && !finalizing && !(parent.metadata.finalizers ?? []).includes(this.finalizer)) {
      parent = await this.api.call<KubeObject>("PATCH", parentPath, { metadata: { finalizers: [...(parent.metadata.finalizers ?? []), this.finalizer], resourceVersion: parent.metadata.resourceVersion } }, "application/merge-patch+json");
    }
    const related = await this.readRelated(parent);
    const { children, strategies } = await this.readChildren(parent);
    const request = { controller: this.controller, parent, children, related, finalizing };
    const hook = finalizing && finalizeHook !== undefined ? finalizeHook : this.controller.spec.hooks.sync;
    const answer = await this.call<HookAnswer>(hook, request);
    const unknown = Object.keys(answer).filter((field) => !RESPONSE_FIELDS.has(field));
    if (unknown.length > 0) throw new Error(`hook answer has unknown fields ${unknown.join(", ")} (v2 decodes strictly)`);

    if (finalizing && answer.finalized === true) {
      // The finalizer goes first; the children of this answer are not applied (the garbage collector takes them).
      await this.api.call("PATCH", parentPath, { metadata: { finalizers: (parent.metadata.finalizers ?? []).filter((f) => f !== this.finalizer), resourceVersion: parent.metadata.resourceVersion } }, "application/merge-patch+json");
      return { request, answer, changes: [], statusWritten: false };
    }
    const changes = await this.manageChildren(parent, children, strategies, answer.children);
    const statusWritten = await this.writeStatus(parentPath, parent, answer.status);
    return { request, answer, changes, statusWritten };
  }

  private async manageChildren(parent: KubeObject, observed: ObjectsByType, strategies: Map<string, ChildResource>, desired: KubeObject[]): Promise<string[]> {
    const changes: string[] = [];
    const wanted = new Set<string>();
    for (const child of desired) {
      const key = typeKey(child.apiVersion, child.kind);
      const strategy = strategies.get(key);
      if (strategy === undefined) throw new Error(`the answer has a ${key}, which the CompositeController does not declare as a child`);
      wanted.add(`${key} ${objectKey(child)}`);
      const object = this.owned(parent, child);
      const existing = observed[key]?.[objectKey(child)];
      const label = `${child.kind} ${objectKey(child)}`;
      if (existing === undefined) {
        await this.api.apply(object, FIELD_MANAGER);
        changes.push(`${label}: created`);
        continue;
      }
      const method = strategy.updateStrategy?.method ?? "OnDelete";
      if (method === "OnDelete") continue;
      const afterApply = await this.api.apply(object, FIELD_MANAGER, { dryRun: true }).catch((error: unknown) => error as Error);
      if (!(afterApply instanceof Error) && content(afterApply) === content(existing)) continue;
      if (method === "Recreate" || method === "RollingRecreate") {
        await this.api.delete(existing, { propagationPolicy: "Background" });
        await this.api.apply(object, FIELD_MANAGER);
        changes.push(`${label}: recreated`);
      } else {
        if (afterApply instanceof Error) throw afterApply;
        await this.api.apply(object, FIELD_MANAGER);
        changes.push(`${label}: updated`);
      }
    }
    for (const [key, byName] of Object.entries(observed)) {
      for (const [name, object] of Object.entries(byName)) {
        if (wanted.has(`${key} ${name}`) || object.metadata.deletionTimestamp !== undefined) continue;
        await this.api.delete(object, { propagationPolicy: "Background" });
        changes.push(`${object.kind} ${name}: deleted`);
      }
    }
    return changes;
  }

  /** The desired child as Metacontroller sends it: labelled, owned by the parent, its last-applied state recorded. */
  private owned(parent: KubeObject, child: KubeObject): KubeObject {
    const metadata = child.metadata;
    return {
      ...child,
      metadata: {
        ...metadata,
        labels: { ...metadata.labels, "controller-uid": parent.metadata.uid! },
        annotations: { ...metadata.annotations, [LAST_APPLIED]: JSON.stringify(child) },
        ownerReferences: [{ apiVersion: parent.apiVersion, kind: parent.kind, name: parent.metadata.name, uid: parent.metadata.uid!, controller: true, blockOwnerDeletion: true }],
      },
    };
  }

  /** Replaces the parent's status through the status subresource, unless it is already the answer's. */
  private async writeStatus(parentPath: string, parent: KubeObject, status: Record<string, unknown>): Promise<boolean> {
    const next = { ...status, observedGeneration: parent.metadata.generation };
    if (canonical(parent.status ?? {}) === canonical(next)) return false;
    await this.api.call("PUT", `${parentPath}/status`, { ...parent, status: next });
    return true;
  }
}
