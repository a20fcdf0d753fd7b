// The process around the hooks: refuses dangerous configuration, says what it runs with, and
// stops gracefully. It runs as the image's CMD runs it: `node dist/hooks/server.js`, the build of
// test/support/build.ts.
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { request as httpRequest } from "node:http";
import { createServer } from "node:net";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { after, describe, test } from "node:test";
import { DEFAULTS, VARIABLES } from "../../hooks/config.ts";
import { freePort, waitFor } from "../e2e/harness.ts";
import { ensureBuilt } from "../support/build.ts";

ensureBuilt();
const SERVER = fileURLToPath(new URL("../../dist/hooks/server.js", import.meta.url));
const start = (env: Record<string, string>) => spawn(process.execPath, [SERVER], { env: { PATH: process.env.PATH, ...env }, stdio: ["ignore", "pipe", "pipe"] });
const run = (env: Record<string, string>) => spawnSync(process.execPath, [SERVER], { env: { PATH: process.env.PATH, ...env }, encoding: "utf8", timeout: 20_000 });

const ENDPOINTS = { CORE_ETCD_ENDPOINTS: "https://10.0.0.1:2379" };

/** A refusal is exit code 2 and exactly one line, which names the variable. */
function assertRefused(result: ReturnType<typeof run>, message: RegExp): void {
  assert.equal(result.status, 2, result.stderr);
  const lines = result.stderr.trim().split("\n");
  assert.equal(lines.length, 1, `one line, not:\n${result.stderr}`);
  assert.match(lines[0]!, message);
}

describe("configuration", () => {
  const cases: [string, Record<string, string>, RegExp][] = [
    ["no core endpoints", {}, /CORE_ETCD_ENDPOINTS: is required/],
    ["root /", { CORE_ETCD_ENDPOINTS: "https://10.0.0.1:2379", TENANT_PREFIX_ROOT: "/" }, /TENANT_PREFIX_ROOT: /],
    ["a root touching /registry/", { CORE_ETCD_ENDPOINTS: "https://10.0.0.1:2379", TENANT_PREFIX_ROOT: "/registry/t/" }, /TENANT_PREFIX_ROOT: .*overlaps/],
    ["a non-https endpoint", { CORE_ETCD_ENDPOINTS: "http://10.0.0.1:2379" }, /CORE_ETCD_ENDPOINTS: .*https/],
    ["an image without a tag", { CORE_ETCD_ENDPOINTS: "https://10.0.0.1:2379", ETCD_IMAGE: "registry.k8s.io/etcd" }, /ETCD_IMAGE: /],
    ["a host that is not a name", { ...ENDPOINTS, HOST: "not a host" }, /^invalid configuration: HOST: "not a host" is neither an IP address nor a host name$/],
    // Found only when listening: the name is well formed but resolves to nothing.
    ["an unresolvable host", { ...ENDPOINTS, HOST: "not-a-host.invalid" }, /^invalid configuration: HOST: "not-a-host\.invalid" does not resolve to an address/],
    ["an address of another machine", { ...ENDPOINTS, HOST: "192.0.2.1" }, /^invalid configuration: HOST: "192\.0\.2\.1" is not an address of this machine/],
    ["a quota default no tenant could write", { ...ENDPOINTS, DEFAULT_WRITE_BYTES_PER_SECOND: "100" }, /^invalid configuration: DEFAULT_WRITE_BYTES_PER_SECOND: the default of spec\.quota\.writeBytesPerSecond must be .* from 1Ki to 16Mi \(got "100"\)$/],
  ];
  for (const [what, env, message] of cases) {
    test(`${what}: the server exits 2 with one line naming the variable`, () => {
      assertRefused(run(env), message);
    });
  }

  test("a port in use: the server exits 2 with one line naming PORT", async () => {
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
    const port = (holder.address() as { port: number }).port;
    try {
      assertRefused(run({ ...ENDPOINTS, HOST: "127.0.0.1", PORT: String(port) }), new RegExp(`^invalid configuration: PORT: ${port} is already in use on 127\\.0\\.0\\.1`));
    } finally {
      holder.close();
    }
  });
});

describe("a running server", () => {
  const servers: ChildProcess[] = [];
  after(() => servers.forEach((server) => server.kill("SIGKILL")));

  const serve = async () => {
    const port = await freePort();
    const server = start({ CORE_ETCD_ENDPOINTS: "https://10.0.0.1:2379", PORT: String(port), HOST: "127.0.0.1" });
    servers.push(server);
    let output = "";
    server.stdout!.on("data", (chunk) => (output += chunk));
    server.stderr!.on("data", (chunk) => (output += chunk));
    await waitFor("server listening", async () => output.includes("Server listening"), 20_000, () => output);
    return { server, port, output: () => output };
  };

  test("the first line is the effective configuration: every setting, by variable, as JSON", async () => {
    const { port, output } = await serve();
    const first = JSON.parse(output().split("\n")[0]!);
    assert.equal(first.msg, "effective configuration");
    assert.deepEqual(Object.keys(first.configuration).sort(), Object.values(VARIABLES).sort());
    assert.deepEqual(first.configuration, {
      ...Object.fromEntries(Object.entries(DEFAULTS)),
      CORE_ETCD_ENDPOINTS: ["https://10.0.0.1:2379"],
      PORT: port,
      HOST: "127.0.0.1",
      BODY_LIMIT_BYTES: Number(DEFAULTS.BODY_LIMIT_BYTES),
      DEFAULT_REQUESTS_PER_SECOND: Number(DEFAULTS.DEFAULT_REQUESTS_PER_SECOND),
    });
  });

  test("SIGTERM: the in-flight request is answered, then the process exits 0", async () => {
    const { server, port, output } = await serve();
    const body = readFileSync(new URL("../fixtures/sync-request.json", import.meta.url));
    const answered = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const request = httpRequest({ host: "127.0.0.1", port, method: "POST", path: "/sync", headers: { "content-type": "application/json", "content-length": body.length, expect: "100-continue" } }, (response) => {
        let text = "";
        response.on("data", (chunk) => (text += chunk));
        response.on("end", () => resolve({ status: response.statusCode!, body: text }));
      });
      request.on("error", reject);
      // The server sends 100 Continue once it has taken the request (a request it had not taken
      // before shutting down is refused with 503): from then on the request is in flight. Half the
      // body now; the rest only once the server has begun shutting down.
      request.on("continue", () => {
        request.write(body.subarray(0, body.length / 2), () => {
          server.kill("SIGTERM");
          waitFor("shutdown begun", async () => output().includes("shutting down")).then(() => request.end(body.subarray(body.length / 2)), reject);
        });
      });
      request.flushHeaders();
    });
    const reply = await answered;
    assert.equal(reply.status, 200, reply.body);
    assert.ok(JSON.parse(reply.body).children.length > 0);
    const [code] = await once(server, "exit");
    assert.equal(code, 0);
  });

  test("SIGTERM with the log reader gone (stdout closed): the process still exits 0", async () => {
    const { server } = await serve();
    // Whatever reads the container's log went away: every line from now on fails with EPIPE.
    server.stdout!.destroy();
    server.kill("SIGTERM");
    const exit = once(server, "exit");
    const timer = setTimeout(() => server.kill("SIGKILL"), 5_000);
    const [code, signal] = await exit;
    clearTimeout(timer);
    assert.deepEqual({ code, signal }, { code: 0, signal: null });
  });

  test("/healthz answers while the server is busy issuing certificates", async () => {
    const { port } = await serve();
    const fixture = JSON.parse(readFileSync(new URL("../fixtures/sync-request.json", import.meta.url), "utf8"));
    const post = (name: string) =>
      fetch(`http://127.0.0.1:${port}/sync`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...fixture, parent: { ...fixture.parent, metadata: { ...fixture.parent.metadata, name } } }) });
    const busy = Array.from({ length: 40 }, (_, i) => post(`tenant-${i}`));
    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(health.status, 200);
    assert.ok((await Promise.all(busy)).every((reply) => reply.status === 200));
  });
});
