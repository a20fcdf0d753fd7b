// The process around the hooks: refuses dangerous configuration, and stops gracefully.
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { request as httpRequest } from "node:http";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { after, describe, test } from "node:test";
import { freePort, waitFor } from "../e2e/harness.ts";

const SERVER = fileURLToPath(new URL("../../hooks/server.ts", import.meta.url));
const start = (env: Record<string, string>) => spawn(process.execPath, ["--import", "tsx", SERVER], { env: { PATH: process.env.PATH, ...env }, stdio: ["ignore", "pipe", "pipe"] });
const run = (env: Record<string, string>) => spawnSync(process.execPath, ["--import", "tsx", SERVER], { env: { PATH: process.env.PATH, ...env }, encoding: "utf8", timeout: 20_000 });

describe("configuration", () => {
  const cases: [string, Record<string, string>, RegExp][] = [
    ["no core endpoints", {}, /CORE_ETCD_ENDPOINTS: is required/],
    ["root /", { CORE_ETCD_ENDPOINTS: "https://10.0.0.1:2379", TENANT_PREFIX_ROOT: "/" }, /TENANT_PREFIX_ROOT: /],
    ["a root touching /registry/", { CORE_ETCD_ENDPOINTS: "https://10.0.0.1:2379", TENANT_PREFIX_ROOT: "/registry/t/" }, /TENANT_PREFIX_ROOT: .*overlaps/],
    ["a non-https endpoint", { CORE_ETCD_ENDPOINTS: "http://10.0.0.1:2379" }, /CORE_ETCD_ENDPOINTS: .*https/],
    ["an image without a tag", { CORE_ETCD_ENDPOINTS: "https://10.0.0.1:2379", ETCD_IMAGE: "registry.k8s.io/etcd" }, /ETCD_IMAGE: /],
  ];
  for (const [what, env, message] of cases) {
    test(`${what}: the server exits non-zero naming the variable`, () => {
      const result = run(env);
      assert.equal(result.status, 2, result.stderr);
      assert.match(result.stderr, message);
    });
  }
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

  test("SIGTERM: the in-flight request is answered, then the process exits 0", async () => {
    const { server, port, output } = await serve();
    const body = readFileSync(new URL("../fixtures/sync-request.json", import.meta.url));
    const answered = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const request = httpRequest({ host: "127.0.0.1", port, method: "POST", path: "/sync", headers: { "content-type": "application/json", "content-length": body.length } }, (response) => {
        let text = "";
        response.on("data", (chunk) => (text += chunk));
        response.on("end", () => resolve({ status: response.statusCode!, body: text }));
      });
      request.on("error", reject);
      // Half the body now; the rest only once the server has begun shutting down.
      request.write(body.subarray(0, body.length / 2), () => {
        server.kill("SIGTERM");
        waitFor("shutdown begun", async () => output().includes("shutting down")).then(() => request.end(body.subarray(body.length / 2)), reject);
      });
    });
    const reply = await answered;
    assert.equal(reply.status, 200, reply.body);
    assert.ok(JSON.parse(reply.body).children.length > 0);
    const [code] = await once(server, "exit");
    assert.equal(code, 0);
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
