// The real Kubernetes and etcd parts the tests run, built from the Go modules pinned in
// test/kubernetes/ into a git-ignored cache (.cache/parts), without root. Each module is built
// once per pin: its folder in the cache is named by a hash of its go.mod, go.sum, Go files (its own
// packages' too) and the Go version, so changing a pin builds it again and nothing else does.
//
// `node test/support/parts.ts` builds whatever is missing (npm test runs it first, and says what it
// builds and how long it took); the tests only look binaries up with part(), which fails with a
// message naming that command when the build has not run.
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
const GO_ROOM = path.join(REPO_ROOT, "test/kubernetes");
const CACHE = path.join(REPO_ROOT, ".cache/parts");

// The Kubernetes release the binaries report (kube-apiserver's /version, kubectl version): the
// k8s.io/kubernetes pin in test/kubernetes/go.mod. A build from modules has no git tree to stamp it.
const KUBERNETES_VERSION = /^\s*k8s\.io\/kubernetes v(\d+)\.(\d+)\.(\d+)/m.exec(readFileSync(path.join(GO_ROOM, "go.mod"), "utf8"));
if (KUBERNETES_VERSION === null) throw new Error("test/kubernetes/go.mod does not require k8s.io/kubernetes");
const [, MAJOR, MINOR] = KUBERNETES_VERSION;
const GIT_VERSION = `v${KUBERNETES_VERSION.slice(1).join(".")}`;
const STAMP = ["k8s.io/component-base/version", "k8s.io/client-go/pkg/version"].flatMap((pkg) => [
  `-X ${pkg}.gitVersion=${GIT_VERSION}`,
  `-X ${pkg}.gitMajor=${MAJOR}`,
  `-X ${pkg}.gitMinor=${MINOR}`,
  `-X ${pkg}.gitTreeState=clean`,
]);

interface Binary {
  /** The Go module's folder under test/kubernetes. */
  module: string;
  /** The main package, as `go build` names it from that module; for a test binary, a package of the module's own (`./dir`). */
  package: string;
  /** The file name in the module's cache folder. */
  file: string;
  /** The package's tests, built by `go test -c` into one binary that runs them. */
  test?: true;
}

const BINARIES = {
  "kube-apiserver": { module: ".", package: "k8s.io/kubernetes/cmd/kube-apiserver", file: "kube-apiserver" },
  kubectl: { module: ".", package: "k8s.io/kubernetes/cmd/kubectl", file: "kubectl" },
  "sample-apiserver": { module: ".", package: "k8s.io/sample-apiserver", file: "sample-apiserver" },
  // The kustomize that kubectl of the same release embeds (kubectl's go.mod pins it).
  kustomize: { module: ".", package: "sigs.k8s.io/kustomize/kustomize/v5", file: "kustomize" },
  "etcd-3.6": { module: "etcd-3.6", package: "go.etcd.io/etcd/server/v3", file: "etcd" },
  "etcdctl-3.6": { module: "etcd-3.6", package: "go.etcd.io/etcd/etcdctl/v3", file: "etcdctl" },
  "etcd-3.5": { module: "etcd-3.5", package: ".", file: "etcd" },
  "etcdctl-3.5": { module: "etcd-3.5", package: "go.etcd.io/etcd/etcdctl/v3", file: "etcdctl" },
  // Kubernetes' storage conformance suite on the etcd3 store and the watch cache, directly and
  // through a tenant gateway (test/e2e/storage-suite.test.ts runs it).
  "storage-suite": { module: ".", package: "./storage", file: "storage.test", test: true },
} as const satisfies Record<string, Binary>;

export type PartName = keyof typeof BINARIES;
export const PART_NAMES = Object.keys(BINARIES) as PartName[];

let goVersion: string | undefined;
function go(): string {
  goVersion ??= execFileSync("go", ["env", "GOVERSION"], { encoding: "utf8", env: goEnv() }).trim();
  return goVersion;
}

// Pins are exactly the go.mod's: no toolchain download, no go.mod rewriting, no cgo (static
// binaries, no C compiler needed).
function goEnv(): NodeJS.ProcessEnv {
  return { ...process.env, GOTOOLCHAIN: "local", GOFLAGS: "-mod=readonly", CGO_ENABLED: "0" };
}

/** The cache folder of a module at its current pins, with its own packages as they are. */
function moduleFolder(module: string): string {
  const dir = path.join(GO_ROOM, module);
  const hash = createHash("sha256").update(go());
  for (const file of readdirSync(dir).filter((f) => f === "go.mod" || f === "go.sum" || f.endsWith(".go")).sort()) {
    hash.update(`${file}\0`).update(readFileSync(path.join(dir, file)));
  }
  const ownPackages = Object.values(BINARIES as Record<string, Binary>).filter((b) => b.module === module && b.package.startsWith("./")).map((b) => b.package).sort();
  for (const pkg of ownPackages) {
    for (const file of readdirSync(path.join(dir, pkg)).filter((f) => f.endsWith(".go")).sort()) {
      hash.update(`${path.join(pkg, file)}\0`).update(readFileSync(path.join(dir, pkg, file)));
    }
  }
  const name = module === "." ? "kubernetes" : module;
  return path.join(CACHE, `${name}-${hash.digest("hex").slice(0, 12)}`);
}

/** The path of a built part; throws, naming the command that builds it, when it is not built. */
export function part(name: PartName): string {
  const binary: Binary = BINARIES[name];
  const file = path.join(moduleFolder(binary.module), binary.file);
  if (!existsSync(file)) throw new Error(`${name} is not built at ${file}: run \`node test/support/parts.ts\` (npm test does)`);
  return file;
}

function run(command: string, args: string[], cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env: goEnv(), stdio: ["ignore", "inherit", "inherit"] });
    child.on("error", reject);
    child.on("exit", (code, signal) => (code === 0 ? resolve() : reject(new Error(`${command} ${args.join(" ")} failed (${signal ?? `exit ${code}`}) in ${cwd}`))));
  });
}

/** Builds every module whose folder is missing; a folder appears whole (built aside, then renamed). */
export async function buildParts(log: (line: string) => void = (line) => process.stderr.write(`${line}\n`)): Promise<void> {
  const modules = [...new Set(Object.values(BINARIES).map((b: Binary) => b.module))];
  for (const module of modules) {
    const folder = moduleFolder(module);
    if (existsSync(folder)) continue;
    const binaries = Object.entries(BINARIES).filter(([, b]) => b.module === module);
    log(`[parts] building ${binaries.map(([name]) => name).join(", ")} from test/kubernetes/${module === "." ? "go.mod" : `${module}/go.mod`} with ${go()}: the first build of these pins`);
    const started = Date.now();
    const building = `${folder}.building-${process.pid}`;
    await rm(building, { recursive: true, force: true });
    await mkdir(building, { recursive: true });
    for (const [name, binary] of binaries as Array<[PartName, Binary]>) {
      const one = Date.now();
      const output = path.join(building, binary.file);
      const args = binary.test === true
        ? ["test", "-c", "-buildvcs=false", "-o", output, "-ldflags=-s -w", binary.package]
        : ["build", "-buildvcs=false", "-o", output, `-ldflags=-s -w ${STAMP.join(" ")}`, binary.package];
      await run("go", args, path.join(GO_ROOM, module));
      log(`[parts]   ${name}: ${((Date.now() - one) / 1000).toFixed(0)} s`);
    }
    // Another build of the same pins (a second `npm test` at once) may have finished first.
    if (existsSync(folder)) await rm(building, { recursive: true, force: true });
    else await rename(building, folder);
    // Earlier pins of this module (built or interrupted) are of no further use.
    const current = path.basename(folder);
    const name = current.replace(/-[0-9a-f]{12}$/, "");
    for (const entry of readdirSync(CACHE)) {
      if (!entry.startsWith(current) && entry.replace(/-[0-9a-f]{12}(\.building-\d+)?$/, "") === name) await rm(path.join(CACHE, entry), { recursive: true, force: true });
    }
    log(`[parts] built in ${((Date.now() - started) / 1000).toFixed(0)} s into ${path.relative(REPO_ROOT, folder)}`);
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await buildParts();
}
