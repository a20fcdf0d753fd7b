// Contract: GET /metrics speaks Prometheus' text format and counts what the hooks did, from their
// reports: calls by hook and outcome, certificates issued, CA rotations, each tenant's earliest expiry.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { before, describe, test } from "node:test";
import type { FastifyInstance } from "fastify";
import { buildApp } from "../../hooks/app.ts";
import type { HookRequest, HookResponse } from "../../hooks/observed.ts";
import { coreRelated, DAY, etcdStorage, makeCorePki, nextRequest, syncRequest, testConfig, QUARTERLY_SPEC } from "../support/requests.ts";

const fixture = (name: string) => JSON.parse(readFileSync(new URL(`../fixtures/${name}`, import.meta.url), "utf8"));
const config = testConfig();
const T0 = new Date("2027-01-01T00:00:00Z");
const SPEC = QUARTERLY_SPEC;

/** The samples of one metric whose labels include `labels`, from Prometheus' text format. */
function samples(text: string, name: string, labels: Record<string, string> = {}): number[] {
  const found: number[] = [];
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const present = Object.fromEntries([...(match[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([key, value]) => present[key] === value)) found.push(Number(match[3]));
  }
  return found;
}
const value = (text: string, name: string, labels: Record<string, string> = {}) => {
  const found = samples(text, name, labels);
  assert.ok(found.length <= 1, `${name} ${JSON.stringify(labels)} names one series`);
  return found[0];
};

describe("GET /metrics", () => {
  let related: HookRequest["related"];
  before(async () => {
    related = coreRelated(config, await makeCorePki(new Date(T0.getTime() - DAY), 5));
  });

  function appAt(clock: { now: Date }): FastifyInstance {
    return buildApp(config, { now: () => clock.now });
  }
  const scrape = async (app: FastifyInstance) => {
    const reply = await app.inject({ method: "GET", url: "/metrics" });
    assert.equal(reply.statusCode, 200);
    assert.match(String(reply.headers["content-type"]), /^text\/plain; version=0\.0\.4/);
    return reply.body;
  };
  const post = async (app: FastifyInstance, url: string, payload: unknown) => {
    const reply = await app.inject({ method: "POST", url, payload: payload as object });
    assert.equal(reply.statusCode, 200, reply.body);
    return reply.json() as HookResponse;
  };

  test("counts hook calls by hook and outcome, with latency histograms", async () => {
    const app = appAt({ now: T0 });
    const request = syncRequest(etcdStorage("t", SPEC), related);
    const first = await post(app, "/sync", request);
    await post(app, "/sync", nextRequest(request, first));
    await post(app, "/customize", fixture("customize-request.json"));
    const invalid = syncRequest(etcdStorage("t", { ...SPEC, replicas: 0 }), related);
    await post(app, "/sync", invalid);

    const text = await scrape(app);
    assert.equal(value(text, "etcdstorage_hook_calls_total", { hook: "sync", outcome: "Synced" }), 2);
    assert.equal(value(text, "etcdstorage_hook_calls_total", { hook: "sync", outcome: "InvalidSpec" }), 1);
    assert.equal(value(text, "etcdstorage_hook_calls_total", { hook: "customize", outcome: "Customized" }), 1);
    assert.equal(value(text, "etcdstorage_hook_duration_seconds_count", { hook: "sync", outcome: "Synced" }), 2);
    assert.equal(value(text, "etcdstorage_hook_duration_seconds_bucket", { hook: "sync", outcome: "Synced", le: "+Inf" }), 2);
    assert.ok(value(text, "etcdstorage_hook_duration_seconds_sum", { hook: "sync", outcome: "Synced" })! > 0);
    assert.ok(samples(text, "process_resident_memory_bytes").length === 1, "the process' own metrics are exported too");
    await app.close();
  });

  test("4xx answers are counted per hook, whether the handler or Fastify rejected them", async () => {
    const app = appAt({ now: T0 });
    await app.inject({ method: "POST", url: "/sync", payload: { children: {} } });
    await app.inject({ method: "POST", url: "/sync", payload: "{not json", headers: { "content-type": "application/json" } });
    await app.inject({ method: "POST", url: "/finalize", payload: { parent: { kind: "Pod" } } });
    await app.inject({ method: "POST", url: "/customize", payload: {} });
    await app.inject({ method: "GET", url: "/sync" }); // 405: not a hook call
    const text = await scrape(app);
    assert.equal(value(text, "etcdstorage_hook_calls_total", { hook: "sync", outcome: "BadRequest" }), 2);
    assert.equal(value(text, "etcdstorage_hook_calls_total", { hook: "finalize", outcome: "BadRequest" }), 1);
    assert.equal(value(text, "etcdstorage_hook_calls_total", { hook: "customize", outcome: "BadRequest" }), 1);
    assert.equal(samples(text, "etcdstorage_hook_calls_total").reduce((a, b) => a + b, 0), 4);
    await app.close();
  });

  test("certificates issued by kind and reason, CA rotations, and the tenant's earliest expiry", async () => {
    const clock = { now: T0 };
    const app = appAt(clock);
    let request = syncRequest(etcdStorage("t", SPEC), related);
    let response = await post(app, "/sync", request);
    const step = async (now: Date) => {
      clock.now = now;
      request = nextRequest(request, response);
      response = await post(app, "/sync", request);
    };

    let text = await scrape(app);
    for (const kind of ["serving-ca", "client-ca"]) assert.equal(value(text, "etcdstorage_certificates_issued_total", { kind, reason: "Issued" }), 1);
    for (const kind of ["serving", "client"]) assert.equal(value(text, "etcdstorage_certificates_issued_total", { kind, reason: "Missing" }), 1);
    const earliest = (r: HookResponse) => Math.min(...(r.status.certificates as { notAfter: string }[]).map((c) => Date.parse(c.notAfter) / 1000));
    assert.equal(value(text, "etcdstorage_tenant_certificate_expiry_timestamp_seconds", { tenant: "t" }), earliest(response));
    assert.equal(value(text, "etcdstorage_tenant_certificate_expiry_timestamp_seconds", { tenant: "t" }), T0.getTime() / 1000 + 30 * 24 * 3600, "the leaves expire first");

    await step(new Date(T0.getTime() + 20.5 * DAY)); // leaves past 2/3 of their life
    await step(new Date(T0.getTime() + 41 * DAY)); // and again
    await step(new Date(T0.getTime() + 60.5 * DAY)); // CAs past 2/3: successors published
    text = await scrape(app);
    for (const kind of ["serving", "client"]) assert.equal(value(text, "etcdstorage_certificates_issued_total", { kind, reason: "NearingExpiry" }), 2);
    for (const kind of ["serving-ca", "client-ca"]) assert.equal(value(text, "etcdstorage_certificates_issued_total", { kind, reason: "SuccessorPublished" }), 1);
    assert.equal(samples(text, "etcdstorage_ca_rotations_total").length, 0, "publishing a successor is not yet a rotation");

    await step(new Date(T0.getTime() + 76 * DAY)); // successors promoted, leaves move to them
    text = await scrape(app);
    for (const kind of ["serving-ca", "client-ca"]) assert.equal(value(text, "etcdstorage_ca_rotations_total", { kind }), 1);
    assert.equal(value(text, "etcdstorage_tenant_certificate_expiry_timestamp_seconds", { tenant: "t" }), earliest(response));
    assert.doesNotMatch(text, /BEGIN|PRIVATE/, "no certificate material in the metrics");
    await app.close();
  });

  test("a finalized tenant's expiry series is removed; the others stay", async () => {
    const app = appAt({ now: T0 });
    for (const name of ["sample-apiserver", "other"]) await post(app, "/sync", syncRequest(etcdStorage(name, SPEC), related));
    let text = await scrape(app);
    assert.equal(samples(text, "etcdstorage_tenant_certificate_expiry_timestamp_seconds").length, 2);

    const finalizing = fixture("finalize-request.json");
    await post(app, "/finalize", finalizing);
    text = await scrape(app);
    assert.equal(value(text, "etcdstorage_hook_calls_total", { hook: "finalize", outcome: "Finalizing" }), 1);
    assert.equal(samples(text, "etcdstorage_tenant_certificate_expiry_timestamp_seconds").length, 2, "certificates exist until the tenant is finalized");

    finalizing.parent.status = { conditions: [{ type: "Cleanup", status: "True", reason: "KeysDeleted", message: "done", lastTransitionTime: "2026-11-22T12:00:00Z" }] };
    assert.equal((await post(app, "/finalize", finalizing)).finalized, true);
    text = await scrape(app);
    assert.equal(value(text, "etcdstorage_hook_calls_total", { hook: "finalize", outcome: "Finalized" }), 1);
    assert.equal(value(text, "etcdstorage_tenant_certificate_expiry_timestamp_seconds", { tenant: "sample-apiserver" }), undefined);
    assert.ok(value(text, "etcdstorage_tenant_certificate_expiry_timestamp_seconds", { tenant: "other" })! > 0);
    await app.close();
  });

  test("each app has its own registry; /metrics accepts GET only", async () => {
    const one = appAt({ now: T0 });
    const two = appAt({ now: T0 });
    await post(one, "/sync", syncRequest(etcdStorage("t", SPEC), related));
    assert.equal(value(await scrape(one), "etcdstorage_hook_calls_total", { hook: "sync", outcome: "Synced" }), 1);
    assert.equal(value(await scrape(two), "etcdstorage_hook_calls_total", { hook: "sync", outcome: "Synced" }), undefined);
    const wrong = await one.inject({ method: "POST", url: "/metrics", payload: {} });
    assert.equal(wrong.statusCode, 405);
    assert.equal(wrong.headers.allow, "GET");
    await Promise.all([one.close(), two.close()]);
  });
});
