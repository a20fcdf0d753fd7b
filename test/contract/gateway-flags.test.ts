// The gateway's command line (gateway/shell/config.ts, gateway/shell/tls.ts, gateway/main.ts), run as the proxy
// pod runs it: `node dist/gateway/main.js --flag=value ...` (the build of test/support/build.ts). A bad setting stops it at start with exit
// code 2 and exactly one line on stderr naming the flag, before it serves anything. The same flags
// with nothing wrong start a gateway that serves /livez and stops with 0 on SIGTERM: each refusal
// is the one change's doing.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { ensureBuilt } from "../support/build.ts";
import { makeCorePki } from "../support/requests.ts";
import { freePort, httpGet, waitFor } from "../e2e/harness.ts";

const REPO = fileURLToPath(new URL("../../", import.meta.url));
ensureBuilt();

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Starts the gateway; `ready`, if given, runs once it is up and may stop it. Killed after 20 s whatever happens. */
function runGateway(args: readonly string[], ready?: (pid: number) => Promise<void>): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["dist/gateway/main.js", ...args], { cwd: REPO, env: { PATH: process.env.PATH ?? "/usr/bin:/bin" }, stdio: ["ignore", "pipe", "pipe"] });
    const output = { stdout: "", stderr: "" };
    child.stdout.on("data", (chunk: Buffer) => (output.stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output.stderr += chunk.toString()));
    const guard = setTimeout(() => child.kill("SIGKILL"), 20_000);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(guard);
      resolve({ code, signal, ...output });
    });
    if (ready) ready(child.pid!).catch((error: unknown) => {
      child.kill("SIGKILL");
      reject(error);
    });
  });
}

describe("the gateway's flags: a bad one exits 2 with one line naming it", { concurrency: 4 }, () => {
  let dir: string;
  let files: Record<"ca" | "serverCert" | "serverKey" | "clientCert" | "clientKey", string>;
  let valid: Map<string, string>;
  /** A listener holding a port, as another process would. */
  let taken: net.Server;
  let takenPort: number;
  /** The client port of the one case that gets as far as listening on it, apart from the valid run's. */
  let spare: number;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "gateway-flags-"));
    const pki = await makeCorePki();
    files = { ca: "ca.crt", serverCert: "server.crt", serverKey: "server.key", clientCert: "client.crt", clientKey: "client.key" };
    const pem = { ca: pki.ca.certPem, serverCert: pki.server.certPem, serverKey: pki.server.keyPem, clientCert: pki.client.certPem, clientKey: pki.client.keyPem };
    for (const [name, file] of Object.entries(files) as [keyof typeof files, string][]) {
      files[name] = path.join(dir, file);
      await writeFile(files[name], pem[name], { mode: 0o600 });
    }
    // Core etcd is never reached: a bad setting stops the gateway before it dials.
    valid = new Map([
      ["--tenant", "t"],
      ["--prefix", "/etcdstorage/t/"],
      ["--endpoints", "https://127.0.0.1:1"],
      ["--listen-address", `127.0.0.1:${await freePort()}`],
      ["--health-address", `127.0.0.1:${await freePort()}`],
      ["--cert-file", files.serverCert],
      ["--key-file", files.serverKey],
      ["--trusted-ca-file", files.ca],
      ["--cacert", files.ca],
      ["--cert", files.clientCert],
      ["--key", files.clientKey],
      ["--quota-storage-bytes", "268435456"],
      ["--quota-write-bytes-per-second", "262144"],
      ["--quota-requests-per-second", "1000"],
    ]);
    taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    takenPort = (taken.address() as net.AddressInfo).port;
    spare = await freePort();
  });
  after(async () => {
    taken?.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** The valid flags with some replaced (a value), left out (undefined) or added. */
  const flags = (changes: Record<string, string | undefined> = {}, extra: string[] = []) => {
    const merged = new Map(valid);
    for (const [flag, value] of Object.entries(changes)) {
      if (value === undefined) merged.delete(flag);
      else merged.set(flag, value);
    }
    return [...[...merged].map(([flag, value]) => `${flag}=${value}`), ...extra];
  };

  test("the valid flags start a gateway that serves /livez and stops with 0", async () => {
    const health = valid.get("--health-address")!;
    const run = await runGateway(flags(), async (pid) => {
      await waitFor("the gateway's /livez", async () => (await httpGet(`http://${health}/livez`)).status === 200, 15_000);
      process.kill(pid, "SIGTERM");
    });
    assert.deepEqual([run.code, run.signal, run.stderr], [0, null, ""]);
    assert.match(run.stdout, /"msg":"gateway serving"/);
  });

  const refusals: [string, () => string[], string][] = [
    ["an unknown flag", () => flags({}, ["--namespace=/registry/"]), "--namespace"],
    ["a flag without a value", () => flags({}, ["--replicas"]), "--replicas"],
    ["an http:// endpoint", () => flags({ "--endpoints": "http://127.0.0.1:2379" }), "--endpoints"],
    ["an endpoint with a path", () => flags({ "--endpoints": "https://127.0.0.1:2379,https://127.0.0.1:2380/v3" }), "--endpoints"],
    ["a prefix not ending with the tenant", () => flags({ "--prefix": "/etcdstorage/other/" }), "--prefix"],
    ["a prefix without slashes", () => flags({ "--prefix": "etcdstorage" }), "--prefix"],
    ["the whole keyspace as prefix", () => flags({ "--prefix": "/" }), "--prefix"],
    ["a tenant that is not a DNS label", () => flags({ "--tenant": "T_1", "--prefix": "/etcdstorage/T_1/" }), "--tenant"],
    ["an unreadable --cert-file", () => flags({ "--cert-file": path.join(dir, "missing.crt") }), "--cert-file"],
    ["a directory as --cert-file", () => flags({ "--cert-file": dir }), "--cert-file"],
    ["a key as the trusted CA", () => flags({ "--trusted-ca-file": files.serverKey }), "--trusted-ca-file"],
    ["a serving key that does not match the certificate", () => flags({ "--key-file": files.clientKey }), "--key-file"],
    ["a core key that does not match the certificate", () => flags({ "--key": files.serverKey }), "--key"],
    ["a --listen-address whose port is in use", () => flags({ "--listen-address": `127.0.0.1:${takenPort}` }), "--listen-address"],
    ["a --health-address whose port is in use", () => flags({ "--health-address": `127.0.0.1:${takenPort}`, "--listen-address": `127.0.0.1:${spare}` }), "--health-address"],
    ["a --listen-address without a port", () => flags({ "--listen-address": "127.0.0.1" }), "--listen-address"],
    ["a storage quota as a quantity", () => flags({ "--quota-storage-bytes": "256Mi" }), "--quota-storage-bytes"],
    ["no requests per second", () => flags({ "--quota-requests-per-second": "0" }), "--quota-requests-per-second"],
    ["no replicas", () => flags({ "--replicas": "0" }), "--replicas"],
    ["an unknown log level", () => flags({ "--log-level": "loud" }), "--log-level"],
  ];
  const required = ["--tenant", "--prefix", "--endpoints", "--cert-file", "--key-file", "--trusted-ca-file", "--cacert", "--cert", "--key", "--quota-storage-bytes", "--quota-write-bytes-per-second", "--quota-requests-per-second"];
  for (const flag of required) refusals.push([`no ${flag}`, () => flags({ [flag]: undefined }), flag]);

  for (const [what, args, flag] of refusals) {
    test(`${what}: exit 2 naming ${flag}`, async () => {
      const run = await runGateway(args());
      assert.deepEqual([run.code, run.signal, run.stdout], [2, null, ""], run.stderr);
      assert.match(run.stderr, new RegExp(`^invalid configuration: ${flag}: [^\\n]+\\n$`), "one line, naming the flag");
    });
  }
});
