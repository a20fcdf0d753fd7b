// What the gateway writes by hand instead of loading prom-client, pino and node:http (README:
// Sizing): Prometheus's text format with the names, types and labels the tests and dashboards read
// (gateway/shell/metrics.ts, exposition.ts, process-metrics.ts), pino's log line shape
// (gateway/log.ts), and the HTTP/1.1 of the health port (gateway/shell/http1.ts).
import assert from "node:assert/strict";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { describe, test } from "node:test";
import { createLogger } from "../../gateway/log.ts";
import { escapeLabel, Exposition } from "../../gateway/shell/exposition.ts";
import { serveHttp1 } from "../../gateway/shell/http1.ts";
import { GatewayMetrics } from "../../gateway/shell/metrics.ts";
import { Status } from "../../gateway/wire/grpc.ts";
import { parseMetrics, valueOf } from "../e2e/gateway-kit.ts";

/** Every family: its TYPE, and that each sample belongs to a family declared before it. */
function families(text: string): Map<string, string> {
  const types = new Map<string, string>();
  for (const line of text.split("\n")) {
    const type = /^# TYPE (\S+) (counter|gauge|histogram)$/.exec(line);
    if (type) {
      assert.ok(!types.has(type[1]!), `${type[1]} declared twice`);
      types.set(type[1]!, type[2]!);
      continue;
    }
    if (line === "" || line.startsWith("# HELP ")) continue;
    const name = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{/.exec(line)?.[1];
    assert.ok(name, `not a sample line: ${line}`);
    const family = [name, name.replace(/_(bucket|sum|count)$/, "")].find((n) => types.has(n));
    assert.ok(family, `${name} before its # TYPE`);
  }
  return types;
}

describe("metrics", () => {
  test("calls, latency, streams, refusals and the read-on-scrape gauges, each labelled with the tenant", async () => {
    const metrics = new GatewayMetrics("tenant-a");
    let used = 10;
    metrics.storage(() => used, { storageBytes: 1024, writeBytesPerSecond: 256, requestsPerSecond: 100 });
    metrics.held(() => 3, () => 4);
    metrics.call("/etcdserverpb.KV/Put", Status.OK, 0.0004);
    metrics.call("/etcdserverpb.KV/Put", Status.OK, 0.003);
    metrics.call("/etcdserverpb.KV/Put", Status.RESOURCE_EXHAUSTED, 7);
    metrics.call("unimplemented", 99, 0);
    metrics.streamOpened("/etcdserverpb.Watch/Watch");
    metrics.streamOpened("/etcdserverpb.Watch/Watch");
    metrics.streamClosed("/etcdserverpb.Watch/Watch");
    metrics.refused("storage");
    metrics.confirmed("progress");
    metrics.limitRefused("leases");
    used = 20;
    const text = await metrics.exposition();
    const types = families(text);
    assert.equal(types.get("etcdgateway_calls_total"), "counter");
    assert.equal(types.get("etcdgateway_call_duration_seconds"), "histogram");
    assert.equal(types.get("etcdgateway_open_streams"), "gauge");
    assert.equal(types.get("process_resident_memory_bytes"), "gauge");
    assert.equal(types.get("process_cpu_seconds_total"), "counter");
    const samples = parseMetrics(text);
    assert.ok(samples.every((s) => s.labels.tenant === "tenant-a"), "every series carries the tenant");
    const PUT = "/etcdserverpb.KV/Put";
    assert.equal(valueOf(samples, "etcdgateway_calls_total", { method: PUT, code: "OK" }), 2);
    assert.equal(valueOf(samples, "etcdgateway_calls_total", { method: PUT, code: "RESOURCE_EXHAUSTED" }), 1);
    assert.equal(valueOf(samples, "etcdgateway_calls_total", { method: "unimplemented", code: "99" }), 1, "a code without a name, by number");
    const bucket = (le: string) => valueOf(samples, "etcdgateway_call_duration_seconds_bucket", { method: PUT, le });
    assert.deepEqual([bucket("0.0005"), bucket("0.001"), bucket("0.005"), bucket("5"), bucket("+Inf")], [1, 1, 2, 2, 3], "cumulative buckets");
    assert.equal(valueOf(samples, "etcdgateway_call_duration_seconds_count", { method: PUT }), 3);
    assert.ok(Math.abs(valueOf(samples, "etcdgateway_call_duration_seconds_sum", { method: PUT }) - 7.0034) < 1e-9);
    assert.equal(valueOf(samples, "etcdgateway_open_streams", { method: "/etcdserverpb.Watch/Watch" }), 1);
    assert.equal(valueOf(samples, "etcdgateway_quota_refusals_total", { reason: "storage" }), 1);
    assert.equal(valueOf(samples, "etcdgateway_usage_confirmations_total", { how: "progress" }), 1);
    assert.equal(valueOf(samples, "etcdgateway_limit_refusals_total", { limit: "leases" }), 1);
    assert.equal(valueOf(samples, "etcdgateway_storage_used_bytes"), 20, "read when scraped");
    assert.deepEqual(["storage", "write_bytes_per_second", "requests_per_second"].map((resource) => valueOf(samples, "etcdgateway_quota", { resource })), [1024, 256, 100]);
    assert.deepEqual([valueOf(samples, "etcdgateway_open_watches"), valueOf(samples, "etcdgateway_held_leases")], [3, 4]);
    assert.ok(valueOf(samples, "process_resident_memory_bytes") > 1024 * 1024);
    assert.equal(valueOf(samples, "nodejs_version_info", { version: process.version }), 1);
    assert.ok(types.has("nodejs_gc_duration_seconds") && types.has("nodejs_eventloop_lag_p99_seconds") && types.has("nodejs_heap_size_used_bytes"));
  });

  test("label values and help are escaped; odd values written as the format has them", () => {
    assert.equal(escapeLabel('a"b\\c\nd'), 'a\\"b\\\\c\\nd');
    const out = new Exposition('t"1');
    out.family("x", "gauge", "help with \\ and\nnewline");
    out.sample("x", `k="${escapeLabel("v\n")}"`, NaN);
    out.sample("x", "", Infinity);
    assert.equal(out.text(), '# HELP x help with \\\\ and\\nnewline\n# TYPE x gauge\nx{k="v\\n",tenant="t\\"1"} NaN\nx{tenant="t\\"1"} +Inf\n');
    const [first] = parseMetrics(out.text());
    assert.deepEqual(first!.labels, { k: "v\n", tenant: 't"1' });
  });
});

describe("log", () => {
  const captured = (run: (fd: number) => void): string[] => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "gateway-log-"));
    const file = path.join(dir, "log");
    const fd = openSync(file, "w");
    try {
      run(fd);
    } finally {
      closeSync(fd);
    }
    const lines = readFileSync(file, "utf8").split("\n").filter((line) => line !== "");
    rmSync(dir, { recursive: true });
    return lines;
  };

  test("pino's line: level, time, the base fields, the event's fields, then msg", () => {
    const before = Date.now();
    const lines = captured((fd) => {
      const log = createLogger("info", { tenant: "t" }, fd);
      log.info({ config: { a: 1 } }, "gateway serving");
      log.warn({ err: new TypeError("bad") }, "failed");
      log.info("stopped");
      log.debug({ x: 1 }, "below the level");
    });
    assert.equal(lines.length, 3);
    const [serving, failed, stopped] = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    assert.deepEqual(Object.keys(serving!), ["level", "time", "tenant", "config", "msg"]);
    assert.deepEqual([serving!.level, serving!.tenant, serving!.config, serving!.msg], [30, "t", { a: 1 }, "gateway serving"]);
    assert.ok((serving!.time as number) >= before);
    assert.equal(failed!.level, 40);
    assert.deepEqual([(failed!.err as { type: string }).type, (failed!.err as { message: string }).message], ["TypeError", "bad"]);
    assert.deepEqual([stopped!.level, stopped!.msg], [30, "stopped"]);
  });

  test("silent writes nothing; a closed reader is not an error", () => {
    assert.deepEqual(captured((fd) => createLogger("silent", {}, fd).fatal("nothing")), []);
    const fd = openSync(os.devNull, "r"); // not writable: every write fails
    assert.doesNotThrow(() => createLogger("info", {}, fd).info("dropped"));
    closeSync(fd);
  });
});

describe("health port HTTP/1.1", () => {
  const exchange = (port: number, request: string | Buffer): Promise<string> =>
    new Promise((resolve, reject) => {
      const socket = net.connect(port, "127.0.0.1", () => socket.end(request));
      let answer = "";
      socket.on("data", (chunk) => (answer += chunk.toString("latin1")));
      socket.on("close", () => resolve(answer));
      socket.on("error", reject);
    });

  test("answers each request and closes; refuses what is not a request, or too large a head", async () => {
    const seen: string[] = [];
    const server = await serveHttp1("127.0.0.1", 0, async (method, target) => {
      seen.push(`${method} ${target}`);
      if (target === "/fail") throw new Error("inside");
      return target === "/livez" ? { status: 200, body: "ok\n" } : { status: 404, body: "no\n", type: "text/x" };
    });
    const port = (server.address() as net.AddressInfo).port;
    try {
      assert.equal(await exchange(port, "GET /livez HTTP/1.1\r\nHost: x\r\nUser-Agent: kube-probe/1.37\r\n\r\n"), "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n");
      assert.match(await exchange(port, "GET /other HTTP/1.0\r\n\r\n"), /^HTTP\/1\.1 404 Not Found\r\ncontent-type: text\/x\r\ncontent-length: 3\r\n/);
      assert.match(await exchange(port, "GET /fail HTTP/1.1\r\n\r\n"), /^HTTP\/1\.1 500 /);
      assert.match(await exchange(port, "hello\r\n\r\n"), /^HTTP\/1\.1 400 /);
      assert.match(await exchange(port, `GET / HTTP/1.1\r\nX: ${"a".repeat(20_000)}\r\n\r\n`), /^HTTP\/1\.1 431 /);
      // A head in pieces, with a body after it that is never read.
      const socket = net.connect(port, "127.0.0.1");
      const answer = new Promise<string>((resolve) => {
        let text = "";
        socket.on("data", (chunk) => (text += chunk.toString("latin1")));
        socket.on("close", () => resolve(text));
      });
      socket.write("POST /livez HT");
      await new Promise((resolve) => setTimeout(resolve, 50));
      socket.end("TP/1.1\r\ncontent-length: 4\r\n\r\nbody");
      assert.match(await answer, /^HTTP\/1\.1 200 /);
      assert.deepEqual(seen, ["GET /livez", "GET /other", "GET /fail", "POST /livez"]);
    } finally {
      server.close();
    }
  });
});
