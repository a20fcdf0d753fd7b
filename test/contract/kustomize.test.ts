// The install as an admin runs it: the real `kustomize build` (the kustomize that kubectl embeds,
// built by test/support/parts.ts) of manifests/ and of the README's own kustomization (the image
// and the etcd endpoints set without editing a file), every object checked against the schema of
// its kind, and the hook container's environment read by the hook server's own configuration
// loader.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { load, loadAll } from "js-yaml";
import { loadConfig } from "../../hooks/config.ts";
import { buildBackupCrd, buildCrd } from "../../scripts/generate-crd.ts";
import { part } from "../support/parts.ts";
import { upstreamProblems, type Manifest } from "../support/manifests.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const MANIFESTS = path.join(ROOT, "manifests");
// kustomize takes only relative paths to a base, so the overlay is built inside the repository
// (.tmp/ is ignored by git).
mkdirSync(path.join(ROOT, ".tmp"), { recursive: true });
const scratch = mkdtempSync(path.join(ROOT, ".tmp", "kustomize-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

function kustomizeBuild(dir: string): Manifest[] {
  const result = spawnSync(part("kustomize"), ["build", dir], { encoding: "utf8", timeout: 60_000 });
  assert.ifError(result.error);
  assert.equal(result.status, 0, `kustomize build ${dir}:\n${result.stderr}`);
  return loadAll(result.stdout).filter((doc) => doc != null) as Manifest[];
}

/** The README's kustomization: the one YAML block of the README that is a Kustomization. */
function readmeKustomization(): { text: string; object: Manifest } {
  // Blocks inside a list item are indented: the fence's indentation is taken off every line.
  const blocks = [...readFileSync(path.join(ROOT, "README.md"), "utf8").matchAll(/^( *)```yaml\n([\s\S]*?)^\1```/gm)].map(([, indent, body]) =>
    body!.replace(new RegExp(`^${indent}`, "gm"), ""),
  );
  const kustomizations = blocks.filter((block) => /^kind: Kustomization$/m.test(block));
  assert.equal(kustomizations.length, 1, "the README shows exactly one kustomization");
  return { text: kustomizations[0]!, object: load(kustomizations[0]!) };
}

const hookContainer = (objects: Manifest[]) => {
  const deployment = objects.find((o) => o.kind === "Deployment" && o.metadata.name === "etcdstorage-hooks");
  return deployment.spec.template.spec.containers.find((c: Manifest) => c.name === "hooks");
};
const envOf = (container: Manifest) => Object.fromEntries(container.env.map((e: Manifest) => [e.name, e.value]));

function assertValid(objects: Manifest[]) {
  for (const object of objects) {
    const problems = upstreamProblems(object);
    const crd = object.kind === "CustomResourceDefinition" ? [buildCrd(), buildBackupCrd()].find((built) => built.metadata.name === object.metadata.name) : undefined;
    if (object.kind === "CustomResourceDefinition") assert.deepEqual(object, JSON.parse(JSON.stringify(crd)), `the CRD ${object.metadata.name} comes out of kustomize unchanged`);
    else assert.deepEqual(problems, [], `${object.kind} ${object.metadata?.name}: ${problems === undefined ? "no schema here checks this kind; add it" : ""}`);
  }
}

test("kustomize builds manifests/ into exactly the objects of its files, each valid for its kind", () => {
  const built = kustomizeBuild(MANIFESTS);
  const listed = (load(readFileSync(path.join(MANIFESTS, "kustomization.yaml"), "utf8")) as Manifest).resources as string[];
  const written = listed.flatMap((file) => loadAll(readFileSync(path.join(MANIFESTS, file), "utf8")).filter((doc) => doc != null));
  const key = (o: Manifest) => `${o.kind} ${o.metadata.namespace ?? ""}/${o.metadata.name}`;
  assert.deepEqual(built.map(key).sort(), written.map(key).sort());
  for (const object of built) assert.deepEqual(object, written.find((o) => key(o) === key(object)), `${key(object)} is changed by kustomize`);
  assertValid(built);
});

test("the README's kustomization sets the image of the hooks and of the proxies (GATEWAY_IMAGE) and the etcd endpoints, admits Prometheus to the hook server, and the hook server accepts the result", () => {
  const { text, object } = readmeKustomization();
  const [image] = object.images as { name: string; newName: string; newTag: string }[];
  const base = "../manifests";
  assert.deepEqual(object.resources, [base], `the README's kustomization builds on ${base}`);
  const dir = path.join(scratch, "deploy");
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, "kustomization.yaml"), text.replace(`- ${base}`, `- ${path.relative(dir, MANIFESTS)}`));

  const built = kustomizeBuild(dir);
  assertValid(built);
  const container = hookContainer(built);
  const expected = `${image!.newName}:${image!.newTag}`;
  assert.equal(container.image, expected, "the hook container runs the built image");
  const env = envOf(container);
  assert.equal(env.GATEWAY_IMAGE, expected, "the proxies run the same image");
  const config = loadConfig(env);
  assert.equal(config.gatewayImage, expected);
  assert.notDeepEqual(config.coreEtcdEndpoints, loadConfig(envOf(hookContainer(kustomizeBuild(MANIFESTS)))).coreEtcdEndpoints, "the README's kustomization sets CORE_ETCD_ENDPOINTS");
  const policy = built.find((o) => o.kind === "NetworkPolicy" && o.metadata.name === "etcdstorage-hooks");
  const admitted = (policy.spec.ingress as Manifest[]).map((rule) => [rule.from[0].namespaceSelector.matchLabels["kubernetes.io/metadata.name"], rule.ports[0].port]);
  assert.deepEqual(admitted, [["metacontroller", 8080], ["monitoring", 8080]], "Metacontroller's namespace, and Prometheus's for /metrics");
  const placeholder = new RegExp(`^${image!.name.replace(/[.]/g, "\\.")}[:@]`);
  assert.deepEqual(strings(built).filter((value) => placeholder.test(value)), [], `no reference to the placeholder ${image!.name} is left`);
});

function strings(value: unknown): string[] {
  if (typeof value === "string") return [value];
  if (value === null || typeof value !== "object") return [];
  return Object.values(value).flatMap(strings);
}
