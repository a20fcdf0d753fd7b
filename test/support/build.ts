// The gateway and the hook server as the image runs them: compiled to JavaScript in dist/
// (tsconfig.build.json, `npm run build`; the Dockerfile does the same), with the schemas the hooks
// read beside them (dist/schemas/, where hooks/schema.ts looks relative to its own file), so that
// the tests run the very files the proxy Deployment's command and the image's CMD name. `npm test`
// builds first; a test or benchmark run alone builds here, before it starts a gateway, whenever a
// source is newer than its output.
//
// Test files run in parallel: one process builds while the others wait on a lock, and the build
// goes to a folder of its own, each file then moved into dist/ whole (a rename), so that a gateway
// starting meanwhile never reads a half-written file.
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, rmdirSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
/** The compiled tree: dist/gateway/main.js is the gateway's entry, dist/hooks/server.js the hook server's. */
export const DIST = path.join(REPO_ROOT, "dist");
const SOURCES = ["gateway", "hooks"];
// Read at run time, copied as they are.
const ASSETS = "schemas";
const LOCK = path.join(REPO_ROOT, ".cache/build.lock");
const LOCK_WAIT_MS = 120_000;
// A lock older than this was left by a process that died while building.
const STALE_LOCK_MS = 300_000;

function files(dir: string, suffix: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    return entry.isDirectory() ? files(full, suffix) : entry.name.endsWith(suffix) ? [full] : [];
  });
}

/** Sources and schemas whose output in dist/ is missing or older than they are. */
export function staleSources(): string[] {
  const outputs = [
    ...SOURCES.flatMap((dir) => files(path.join(REPO_ROOT, dir), ".ts")).map((source) => [source, path.join(DIST, path.relative(REPO_ROOT, source)).replace(/\.ts$/, ".js")] as const),
    ...files(path.join(REPO_ROOT, ASSETS), ".yaml").map((source) => [source, path.join(DIST, path.relative(REPO_ROOT, source))] as const),
  ];
  return outputs.filter(([source, output]) => !existsSync(output) || statSync(output).mtimeMs < statSync(source).mtimeMs).map(([source]) => source);
}

function moveInto(from: string, to: string): void {
  mkdirSync(to, { recursive: true });
  for (const entry of readdirSync(from, { withFileTypes: true })) {
    const source = path.join(from, entry.name);
    if (entry.isDirectory()) moveInto(source, path.join(to, entry.name));
    else renameSync(source, path.join(to, entry.name));
  }
}

function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Builds dist/ when any source is newer than its output; returns at once when none is. */
export function ensureBuilt(): void {
  if (staleSources().length === 0) return;
  mkdirSync(path.dirname(LOCK), { recursive: true });
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      mkdirSync(LOCK);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      if (Date.now() - statSync(LOCK, { throwIfNoEntry: false })!.mtimeMs > STALE_LOCK_MS) rmSync(LOCK, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error(`waited ${LOCK_WAIT_MS / 1000} s for another process's build of dist/ (${LOCK}); remove it if no build runs`);
      sleep(100);
    }
  }
  try {
    if (staleSources().length === 0) return; // built by the process that held the lock
    const out = mkdtempSync(path.join(REPO_ROOT, ".cache/build-"));
    try {
      try {
        execFileSync(path.join(REPO_ROOT, "node_modules/.bin/tsc"), ["-p", path.join(REPO_ROOT, "tsconfig.build.json"), "--outDir", out], { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] });
      } catch (error) {
        // tsc emits despite type errors, which are `npm test`'s type check's to report (and the
        // image's build refuses them); only files it did not write fail here.
        const output = error as { stdout?: Buffer; stderr?: Buffer };
        if (!["gateway/main.js", "hooks/server.js"].every((entry) => existsSync(path.join(out, entry)))) throw new Error(`building dist/ failed (npm run build):\n${output.stdout?.toString() ?? ""}${output.stderr?.toString() ?? String(error)}`);
      }
      cpSync(path.join(REPO_ROOT, ASSETS), path.join(out, ASSETS), { recursive: true });
      moveInto(out, DIST);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  } finally {
    rmdirSync(LOCK);
  }
}

if (import.meta.main) {
  ensureBuilt();
}
