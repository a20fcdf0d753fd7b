// The install manifests against the schemas that will judge them: Kubernetes' own (through
// kubernetes-models), Metacontroller's CompositeController fields, and ours (the CRD must be
// exactly what scripts/generate-crd.ts builds from schemas/).
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { loadAll, YAML11_SCHEMA } from "js-yaml";
import { DEFAULTS, loadConfig } from "../../hooks/config.ts";
import { API_VERSION, KIND } from "../../hooks/names.ts";
import { CHILD_TYPES } from "../../hooks/observed.ts";
import { SCHEDULER_SERVICE_ACCOUNT } from "../../hooks/children/backup-jobs.ts";
import { etcdStorageSchema } from "../../hooks/schema.ts";
import { readSpec } from "../../hooks/spec.ts";
import { buildBackupCrd, buildCrd } from "../../scripts/generate-crd.ts";
import { unknownFields, upstreamProblems, type Manifest } from "../support/manifests.ts";
import { restrictedViolations } from "../support/pod-security.ts";

const MANIFESTS_DIR = fileURLToPath(new URL("../../manifests/", import.meta.url));
const EXAMPLE = "example-etcdstorage.yaml";
const files = readdirSync(MANIFESTS_DIR).filter((file) => /\.ya?ml$/.test(file)).sort();

function load(file: string): Manifest[] {
  return loadAll(readFileSync(MANIFESTS_DIR + file, "utf8")).filter((doc) => doc !== null && doc !== undefined);
}

const all = () => files.flatMap((file) => load(file).map((object) => ({ file, object })));
const find = (kind: string, name?: string): Manifest => {
  const found = all().filter(({ object }) => object.kind === kind && (name === undefined || object.metadata?.name === name));
  assert.equal(found.length, 1, `expected exactly one ${kind}${name ? ` ${name}` : ""} under manifests/, found ${found.length}`);
  return found[0]!.object;
};

// Every file parses, the same way under YAML 1.2 and 1.1.
for (const file of files) {
  test(`${file}: every document parses as a typed object`, () => {
    const documents = load(file);
    assert.ok(documents.length > 0, "no document");
    for (const doc of documents) {
      assert.equal(typeof doc, "object");
      assert.equal(typeof doc.apiVersion, "string", "apiVersion");
      assert.equal(typeof doc.kind, "string", "kind");
    }
    // kubectl reads YAML 1.1, where an unquoted yes, on or True is a boolean: both readings must agree.
    assert.deepEqual(loadAll(readFileSync(MANIFESTS_DIR + file, "utf8"), { schema: YAML11_SCHEMA }).filter((doc) => doc != null), documents);
  });
}

// The CRD cannot drift from schemas/.
test("manifests/crd.yaml is exactly what scripts/generate-crd.ts builds from schemas/", () => {
  const [crd, ...rest] = load("crd.yaml");
  assert.equal(rest.length, 0);
  assert.deepEqual(crd, JSON.parse(JSON.stringify(buildCrd())), "manifests/crd.yaml is stale: run `npm run generate:crd`");
});

test("manifests/crd-etcdstoragebackup.yaml is exactly what scripts/generate-crd.ts builds from schemas/", () => {
  const [crd, ...rest] = load("crd-etcdstoragebackup.yaml");
  assert.equal(rest.length, 0);
  assert.deepEqual(crd, JSON.parse(JSON.stringify(buildBackupCrd())), "manifests/crd-etcdstoragebackup.yaml is stale: run `npm run generate:crd`");
});

const ETCDSTORAGE_CRD = "etcdstorages.etcdproxy.dev";
const BACKUP_CRD = "etcdstoragebackups.etcdproxy.dev";

// Kinds that are checked by their own test below.
const OTHER_KINDS = [`${API_VERSION} ${KIND}`, "kustomize.config.k8s.io/v1beta1 Kustomization"];

test("every Kubernetes and Metacontroller object validates against the upstream schema of its kind", () => {
  for (const { file, object } of all()) {
    const kind = `${object.apiVersion} ${object.kind}`;
    const problems = upstreamProblems(object);
    assert.ok(problems || OTHER_KINDS.includes(kind), `${file}: ${kind} is checked by no test here; add it`);
    assert.deepEqual(problems ?? [], [], `${file}: ${kind} ${object.metadata?.name}`);
  }
});

test("kubectl get shows each tenant's storage quota from status, where a defaulted tenant has it too; every column names a field of the schema", () => {
  const version = find("CustomResourceDefinition", ETCDSTORAGE_CRD).spec.versions[0];
  const columns = version.additionalPrinterColumns as { name: string; type: string; jsonPath: string }[];
  assert.deepEqual(columns.map((c) => c.name), ["Ready", "Reason", "Quota", "Endpoint", "Prefix", "Age"]);
  assert.deepEqual(columns.find((c) => c.name === "Quota"), { name: "Quota", type: "string", jsonPath: ".status.quota.storage" });
  assertColumnsDeclared(version);
  assert.deepEqual(Object.keys(version.schema.openAPIV3Schema.properties.status.properties.quota.properties), ["storage", "writeBytesPerSecond", "requestsPerSecond"]);
});

test("kubectl get etcdstoragebackups shows the storage, Complete and its reason, revision, keys, size, completion and age; every column names a field of the schema", () => {
  const version = find("CustomResourceDefinition", BACKUP_CRD).spec.versions[0];
  const columns = version.additionalPrinterColumns as { name: string; type: string; jsonPath: string; priority?: number }[];
  assert.deepEqual(columns.filter((c) => !c.priority).map((c) => c.name), ["Storage", "Complete", "Reason", "Revision", "Keys", "Size", "Completed", "Age"]);
  assert.deepEqual(columns.filter((c) => c.priority).map((c) => c.name), ["File", "SHA256"], "with -o wide");
  assertColumnsDeclared(version);
});

function assertColumnsDeclared(version: Manifest): void {
  const columns = version.additionalPrinterColumns as { name: string; type: string; jsonPath: string }[];
  const schema = version.schema.openAPIV3Schema;
  for (const { name, type, jsonPath } of columns) {
    // filters ([?(@.type=="Ready")]) select an item of the list before them
    const fields = jsonPath.replace(/\[\?\(.*?\)\]/g, "[]").split(".").slice(1);
    let node = schema;
    for (const field of fields) node = field.endsWith("[]") ? node?.properties?.[field.slice(0, -2)]?.items : node?.properties?.[field];
    const declared = jsonPath === ".metadata.creationTimestamp" ? "date" : node?.format === "date-time" ? "date" : node?.type;
    assert.equal(declared, type, `column ${name}: ${jsonPath}`);
  }
}

for (const name of [ETCDSTORAGE_CRD, BACKUP_CRD]) test(`the CRD ${name}'s schema is structural, which kubernetes-models does not check (it ignores x-kubernetes-*)`, () => {
  const crd = find("CustomResourceDefinition", name);
  const schema = crd.spec.versions[0].schema.openAPIV3Schema;
  assert.deepEqual(structuralProblems(schema), []);
  // kubernetes/kubernetes#77653: metadata may only restrict name and generateName.
  const metadata = schema.properties.metadata;
  assert.deepEqual(Object.keys(metadata).filter((key) => key !== "type" && key !== "properties"), [], "the API server allows no schema for metadata beyond name and generateName");
  assert.deepEqual(Object.keys(metadata.properties ?? {}).filter((key) => key !== "name" && key !== "generateName"), [], "the API server allows no schema for metadata beyond name and generateName");
});

test("the example EtcdStorage is valid for our own schema and for the hooks", () => {
  const example = find(KIND, "sample-apiserver");
  assert.equal(example.apiVersion, API_VERSION);
  assert.deepEqual(unknownFields({ ...example, metadata: {} }, etcdStorageSchema), [], "the API server would drop these fields");
  const result = readSpec(example, hooksConfig());
  assert.ok(result.valid, result.valid ? "" : result.problems.join("\n"));
});

test("the proxy namespace the hooks are configured with is the one namespace.yaml creates", () => {
  const created = load("namespace.yaml").filter((o) => o.kind === "Namespace").map((o) => o.metadata.name);
  assert.deepEqual(created, [proxyNamespace()]);
});

test("the CompositeController has Metacontroller's shape, every child type with an update method, and v2 hooks", () => {
  const controller = find("CompositeController", "etcdstorage");
  assert.deepEqual(upstreamProblems(controller), []);

  const declared = controller.spec.childResources.map((c: Manifest) => `${c.apiVersion} ${c.resource}`).sort();
  const expected = Object.values(CHILD_TYPES).map((t) => `${t.apiVersion} ${t.resource}`).sort();
  assert.deepEqual(declared, expected, "childResources must be exactly CHILD_TYPES of hooks/observed.ts");
  for (const child of controller.spec.childResources) {
    // Metacontroller's default, OnDelete, never updates an existing child: renewals would be lost.
    assert.ok(child.updateStrategy?.method && child.updateStrategy.method !== "OnDelete", `${child.resource}: needs an explicit updateStrategy.method other than OnDelete`);
  }
  for (const hook of ["sync", "finalize", "customize"]) assert.equal(controller.spec.hooks[hook]?.version, "v2", `hooks.${hook}.version`);
  assert.equal(controller.spec.generateSelector, true);

  const crd = find("CustomResourceDefinition", ETCDSTORAGE_CRD);
  assert.deepEqual(controller.spec.parentResource, { apiVersion: `${crd.spec.group}/${crd.spec.versions[0].name}`, resource: crd.spec.names.plural });
});

test("the backup CompositeController: EtcdStorageBackups as parents, Jobs (recreated, never updated) as the only children, v2 sync, finalize and customize at /backup/...", () => {
  const controller = find("CompositeController", "etcdstoragebackup");
  assert.deepEqual(upstreamProblems(controller), []);
  assert.deepEqual(controller.spec.childResources, [{ apiVersion: "batch/v1", resource: "jobs", updateStrategy: { method: "Recreate" } }]);
  assert.deepEqual(Object.keys(controller.spec.hooks).sort(), ["customize", "finalize", "sync"], "finalize: deletionPolicy Delete deletes the file first");
  for (const hook of ["sync", "finalize", "customize"]) {
    assert.equal(controller.spec.hooks[hook].version, "v2", `hooks.${hook}.version`);
    assert.equal(controller.spec.hooks[hook].webhook.path, `/backup/${hook}`);
  }
  assert.equal(controller.spec.generateSelector, true);
  const crd = find("CustomResourceDefinition", BACKUP_CRD);
  assert.deepEqual(controller.spec.parentResource, { apiVersion: `${crd.spec.group}/${crd.spec.versions[0].name}`, resource: crd.spec.names.plural });
});

test("a backup schedule's runs have a ServiceAccount, in the proxy namespace, allowed EtcdStorageBackups and nothing else", () => {
  const account = find("ServiceAccount", SCHEDULER_SERVICE_ACCOUNT);
  assert.equal(account.metadata.namespace, proxyNamespace());
  const role = find("ClusterRole", SCHEDULER_SERVICE_ACCOUNT);
  assert.deepEqual(role.rules, [{ apiGroups: [find("CustomResourceDefinition", BACKUP_CRD).spec.group], resources: ["etcdstoragebackups"], verbs: ["get", "list", "create", "delete"] }]);
  const binding = find("ClusterRoleBinding", SCHEDULER_SERVICE_ACCOUNT);
  assert.deepEqual([binding.roleRef, binding.subjects], [{ apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: role.metadata.name }, [{ kind: "ServiceAccount", name: account.metadata.name, namespace: account.metadata.namespace }]]);
});

test("every hook webhook reaches the hook Service, whose port leads to the hook container", () => {
  const deployment = find("Deployment", "etcdstorage-hooks");
  const container = deployment.spec.template.spec.containers[0];
  const hooks = all().filter(({ object }) => object.kind === "CompositeController").flatMap(({ object }) => Object.entries<Manifest>(object.spec.hooks).map(([name, hook]) => [`${object.metadata.name} ${name}`, hook] as const));
  assert.equal(hooks.length, 6);
  for (const [name, hook] of hooks) {
    const target = hook.webhook.service;
    const service = find("Service", target.name);
    assert.equal(service.metadata.namespace, target.namespace, `hooks.${name}`);
    const port = service.spec.ports.find((p: Manifest) => p.port === target.port);
    assert.ok(port, `hooks.${name}: Service ${target.name} has no port ${target.port}`);
    const containerPort = container.ports.find((p: Manifest) => p.name === port.targetPort || p.containerPort === port.targetPort);
    assert.equal(containerPort?.containerPort, Number(envOf(container, "PORT") ?? DEFAULTS.PORT), "the Service's targetPort is not the port the hooks listen on");
  }
  const policy = find("NetworkPolicy", "etcdstorage-hooks");
  assert.deepEqual(policy.spec.ingress.flatMap((rule: Manifest) => rule.ports.map((p: Manifest) => p.port)), [Number(DEFAULTS.PORT)]);
  assert.deepEqual(policy.spec.ingress.flatMap((rule: Manifest) => rule.from), [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "metacontroller" } } }], "only Metacontroller's namespace may call the hooks");
  assert.deepEqual(policy.spec.egress, [], "the hooks call nothing");
});

// The kustomization installs everything but the example.
test("kustomization.yaml lists every manifest but the example", () => {
  const kustomization = find("Kustomization");
  const expected = files.filter((file) => file !== "kustomization.yaml" && file !== EXAMPLE).sort();
  assert.deepEqual([...kustomization.resources].sort(), expected);
});

// The hook pods are admitted where the restricted profile is enforced.
test("the hook pods meet the restricted Pod Security Standard their namespace enforces", () => {
  const deployment = find("Deployment", "etcdstorage-hooks");
  const template = deployment.spec.template;
  assert.deepEqual(restrictedViolations(template.spec, template.metadata?.annotations), []);
  for (const name of [deployment.metadata.namespace, proxyNamespace()]) {
    assert.equal(find("Namespace", name).metadata.labels?.["pod-security.kubernetes.io/enforce"], "restricted", `namespace ${name}`);
  }
});

/** The configuration the hook Deployment of manifests/ runs with: it must load, as at start. */
function hooksConfig() {
  const container = find("Deployment", "etcdstorage-hooks").spec.template.spec.containers[0];
  return loadConfig(Object.fromEntries((container.env ?? []).map((e: Manifest) => [e.name, e.value])));
}

function proxyNamespace(): string {
  const container = find("Deployment", "etcdstorage-hooks").spec.template.spec.containers[0];
  return envOf(container, "PROXY_NAMESPACE") ?? DEFAULTS.PROXY_NAMESPACE;
}

function envOf(container: Manifest, name: string): string | undefined {
  return container.env?.find((e: Manifest) => e.name === name)?.value;
}

/**
 * What the API server refuses in a CRD schema and kubernetes-models does not check.
 * https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema
 */
function structuralProblems(node: Manifest, path = "openAPIV3Schema"): string[] {
  const problems: string[] = [];
  for (const key of ["$ref", "$defs", "$schema", "definitions", "dependencies", "additionalItems", "patternProperties", "id"]) {
    if (key in node) problems.push(`${path}: ${key} is not allowed`);
  }
  if (node.uniqueItems === true) problems.push(`${path}: uniqueItems: true is not allowed`);
  const untyped = node["x-kubernetes-int-or-string"] === true || node["x-kubernetes-preserve-unknown-fields"] === true;
  if (typeof node.type !== "string" && !untyped) problems.push(`${path}: has no type`);
  if (node.properties && node.additionalProperties !== undefined) problems.push(`${path}: properties and additionalProperties are exclusive`);
  if (node["x-kubernetes-list-type"] === "map") {
    const items = node.items ?? {};
    for (const key of node["x-kubernetes-list-map-keys"] ?? []) {
      // a list-map key must always have a value: required, or defaulted
      if (!(items.required ?? []).includes(key) && items.properties?.[key]?.default === undefined) problems.push(`${path}: list-map key ${key} is neither required nor defaulted`);
    }
  }
  for (const rule of node["x-kubernetes-validations"] ?? []) {
    if (typeof rule.rule !== "string") problems.push(`${path}: a validation rule has no rule`);
    // fieldPath must name a field below the node that carries the rule
    if (rule.fieldPath !== undefined && !fieldExists(node, rule.fieldPath)) problems.push(`${path}: fieldPath ${rule.fieldPath} is not a field of this schema`);
  }
  for (const [name, child] of Object.entries(node.properties ?? {})) problems.push(...structuralProblems(child, `${path}.properties.${name}`));
  if (node.items) problems.push(...structuralProblems(node.items, `${path}.items`));
  if (typeof node.additionalProperties === "object") problems.push(...structuralProblems(node.additionalProperties, `${path}.additionalProperties`));
  return problems;
}

function fieldExists(node: Manifest, fieldPath: string): boolean {
  if (!/^(\.[A-Za-z_][A-Za-z0-9_]*)+$/.test(fieldPath)) return false;
  let current = node;
  for (const name of fieldPath.split(".").slice(1)) current = current?.properties?.[name];
  return current !== undefined;
}
