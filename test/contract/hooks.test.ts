// Contract: fixture requests through the HTTP server, answers checked against Metacontroller's
// hook format and every child against the upstream Kubernetes schemas.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { PassThrough } from "node:stream";
import { after, before, describe, test } from "node:test";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { Job } from "kubernetes-models/batch/v1/Job";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Secret } from "kubernetes-models/v1/Secret";
import { Service } from "kubernetes-models/v1/Service";
import type { FastifyInstance } from "fastify";
import { buildApp } from "../../hooks/app.ts";
import type { HookResponse, KubeObject } from "../../hooks/observed.ts";
import { nextRequest, testConfig, unb64 } from "../support/requests.ts";
import { restrictedViolations } from "../support/pod-security.ts";
import { unknownFields } from "../support/manifests.ts";
import { etcdStorageSchema } from "../../hooks/schema.ts";
import { buildCrd } from "../../scripts/generate-crd.ts";

const fixture = (name: string) => JSON.parse(readFileSync(new URL(`../fixtures/${name}`, import.meta.url), "utf8"));
const HOOK_RESPONSE_FIELDS = new Set(["status", "children", "resyncAfterSeconds", "finalized"]);
const MODELS: Record<string, new (object: never) => { validate(): void }> = {
  Deployment,
  Service,
  PodDisruptionBudget,
  Secret,
  ConfigMap,
  Job,
};

export function assertValidChildren(children: KubeObject[]): void {
  for (const child of children) {
    const Model = MODELS[child.kind];
    assert.ok(Model, `unexpected child kind ${child.kind}`);
    assert.doesNotThrow(() => new Model(structuredClone(child) as never).validate(), `${child.kind} ${child.metadata.namespace}/${child.metadata.name} fails the Kubernetes schema`);
    assert.ok(child.metadata.namespace, `${child.kind} ${child.metadata.name} has an explicit namespace`);
    assert.ok(!("status" in child), "no status in desired children");
  }
}

describe("hook server contract", () => {
  let app: FastifyInstance;
  const logs = new PassThrough();
  let logText = "";
  logs.on("data", (chunk) => (logText += chunk));
  const config = testConfig({ LOG_LEVEL: "info" });
  const now = new Date("2026-11-22T12:00:00Z");

  before(async () => {
    app = buildApp(config, { now: () => now, logStream: logs });
    await app.ready();
  });
  after(() => app.close());

  const post = (url: string, payload: unknown) => app.inject({ method: "POST", url, payload: payload as object });

  test("POST /sync answers the hook format with valid children, and is a fixed point", async () => {
    const request = fixture("sync-request.json");
    const reply = await post("/sync", request);
    assert.equal(reply.statusCode, 200, reply.body);
    const response = reply.json() as HookResponse;
    assert.deepEqual(Object.keys(response).filter((k) => !HOOK_RESPONSE_FIELDS.has(k)), []);
    assertValidChildren(response.children);
    assert.deepEqual(
      response.children.map((c) => `${c.kind} ${c.metadata.namespace}/${c.metadata.name}`).sort(),
      [
        "ConfigMap kube-apiserver-storage/etcd-sample-apiserver-trusted-ca",
        "ConfigMap sample-system/etcd-serving-ca",
        "Deployment kube-apiserver-storage/etcd-sample-apiserver",
        "PodDisruptionBudget kube-apiserver-storage/etcd-sample-apiserver",
        "Secret kube-apiserver-storage/etcd-sample-apiserver-client-ca",
        "Secret kube-apiserver-storage/etcd-sample-apiserver-server-tls",
        "Secret kube-apiserver-storage/etcd-sample-apiserver-serving-ca",
        "Secret sample-system/etcd-client-cert",
        "Service kube-apiserver-storage/etcd-sample-apiserver",
      ],
    );
    assert.equal((response.status as any).prefix, "/etcdstorage/sample-apiserver/");
    assert.equal((response.status as any).endpoint, "https://etcd-sample-apiserver.kube-apiserver-storage.svc:2379");
    const conditions = (response.status as any).conditions as { type: string; status: string }[];
    assert.deepEqual(conditions.map((c) => [c.type, c.status]), [["Ready", "False"], ["ProxyAvailable", "False"], ["CertificatesReady", "True"], ["CoreCredentialsReady", "True"], ["DestinationsReady", "True"]]);

    const again = (await post("/sync", nextRequest(request, response))).json() as HookResponse;
    assert.deepEqual(again.children, response.children, "feeding the answer back changes no child");
  });

  test("spec.resources reaches the proxy container as written; omitted, the documented default", async () => {
    const proxyResources = async (resources?: unknown) => {
      const request = fixture("sync-request.json");
      if (resources !== undefined) request.parent.spec.resources = resources;
      const response = (await post("/sync", request)).json() as HookResponse;
      assertValidChildren(response.children);
      const deployment = response.children.find((c) => c.kind === "Deployment")!;
      return (deployment.spec as any).template.spec.containers.find((c: { name: string }) => c.name === "gateway").resources;
    };
    assert.deepEqual(await proxyResources(), { requests: { cpu: "50m", memory: "96Mi" }, limits: { memory: "256Mi" } });
    const custom = { requests: { cpu: "250m", memory: "256Mi" }, limits: { cpu: 1, memory: "1Gi" } };
    assert.deepEqual(await proxyResources(custom), custom);
  });

  test("status.quota: the limits in effect, as spec.quota or the configured default writes them; kubectl's Quota column shows the storage quota; nothing in status is pruned", async () => {
    const answer = async (quota?: unknown) => {
      const request = fixture("sync-request.json");
      if (quota !== undefined) request.parent.spec.quota = quota;
      const reply = await post("/sync", request);
      assert.equal(reply.statusCode, 200, reply.body);
      return { request, response: reply.json() as HookResponse };
    };
    const version = buildCrd().spec.versions[0]!;
    const quotaColumn = version.additionalPrinterColumns.find((c) => c.name === "Quota")!;
    const column = (status: unknown) => quotaColumn.jsonPath.split(".").slice(1).reduce((node: any, field) => node?.[field], { status });

    const defaulted = await answer();
    assert.deepEqual(defaulted.response.status.quota, { storage: "256Mi", writeBytesPerSecond: "256Ki", requestsPerSecond: 1000 });
    assert.equal(column(defaulted.response.status), "256Mi", "a tenant without spec.quota shows the default");
    assert.deepEqual(unknownFields({ status: defaulted.response.status }, version.schema.openAPIV3Schema), [], "the API server would prune these fields of status");

    const custom = await answer({ storage: 1073741824, writeBytesPerSecond: "1.5Mi" });
    assert.deepEqual(custom.response.status.quota, { storage: "1073741824", writeBytesPerSecond: "1.5Mi", requestsPerSecond: 1000 });
    assert.equal(column(custom.response.status), "1073741824");
    const gateway = (custom.response.children.find((c) => c.kind === "Deployment")!.spec as any).template.spec.containers[0];
    assert.deepEqual(gateway.args.slice(-4), ["--quota-storage-bytes=1073741824", "--quota-write-bytes-per-second=1572864", "--quota-requests-per-second=1000", "--replicas=2"]);

    // Deterministic: the answer fed back gives the same status again.
    const again = (await post("/sync", nextRequest(custom.request, custom.response))).json() as HookResponse;
    assert.deepEqual(again.status.quota, custom.response.status.quota);

    // An invalid quota is refused by name, and the proxy keeps the flags it was started with.
    const refused = (await post("/sync", { ...nextRequest(custom.request, custom.response), parent: { ...custom.request.parent, spec: { ...custom.request.parent.spec, quota: { storage: "1Ti" } } } })).json() as HookResponse;
    assert.match((refused.status.conditions as { message: string }[])[0]!.message, /^spec\.quota\.storage: must be a quantity of bytes .* from 1Mi to 8Gi \(got "1Ti"\)$/);
    assert.deepEqual(((refused.children.find((c) => c.kind === "Deployment")!.spec as any).template.spec.containers[0]).args, gateway.args);
  });

  test("Secrets carry base64 data only; private keys never in a ConfigMap; CA keys never leave the proxy namespace", async () => {
    const response = (await post("/sync", fixture("sync-request.json"))).json() as HookResponse;
    for (const child of response.children) {
      assert.ok(!("stringData" in child));
      if (child.kind === "ConfigMap") assert.doesNotMatch(JSON.stringify(child), /PRIVATE KEY/);
      if (child.kind === "Secret") {
        assert.equal(child.type, "kubernetes.io/tls");
        const data = child.data as Record<string, string>;
        const caKeys = Object.entries(data).filter(([key]) => key !== "tls.key").map(([, value]) => unb64(value));
        assert.ok(caKeys.every((pem) => !pem.includes("PRIVATE KEY")), "private keys only under tls.key / successor.key");
        if (child.metadata.namespace !== config.proxyNamespace) {
          assert.deepEqual(Object.keys(data).sort(), ["ca.crt", "tls.crt", "tls.key"]);
        }
      }
    }
  });

  test("the destination Secret's client certificate is issued by the client CA, and its ca.crt is the serving CA bundle", async () => {
    const response = (await post("/sync", fixture("sync-request.json"))).json() as HookResponse;
    const get = (ns: string, name: string) => response.children.find((c) => c.metadata.namespace === ns && c.metadata.name === name)!;
    const destination = get("sample-system", "etcd-client-cert").data as Record<string, string>;
    const servingCa = get(config.proxyNamespace, "etcd-sample-apiserver-serving-ca").data as Record<string, string>;
    const { X509Certificate } = await import("node:crypto");
    const clientCa = new X509Certificate(unb64((get(config.proxyNamespace, "etcd-sample-apiserver-client-ca").data as Record<string, string>)["tls.crt"]));
    assert.ok(new X509Certificate(unb64(destination["tls.crt"])).verify(clientCa.publicKey));
    assert.equal(unb64(destination["ca.crt"]), unb64(servingCa["ca.crt"]));
    assert.equal((get("sample-system", "etcd-serving-ca").data as Record<string, string>)["ca.crt"], unb64(servingCa["ca.crt"]));
  });

  test("POST /customize asks for the core CA ConfigMap and client Secret, and the destinations' Namespaces by name", async () => {
    const reply = await post("/customize", fixture("customize-request.json"));
    assert.equal(reply.statusCode, 200);
    assert.deepEqual(reply.json(), {
      relatedResources: [
        { apiVersion: "v1", resource: "configmaps", namespace: "kube-apiserver-storage", names: ["etcd-coreserving-ca"] },
        { apiVersion: "v1", resource: "secrets", namespace: "kube-apiserver-storage", names: ["etcd-coreserving-cert"] },
        // Cluster-scoped: no namespace field (Metacontroller's RelatedResourceRule omits it when empty).
        { apiVersion: "v1", resource: "namespaces", names: ["sample-system"] },
      ],
    });
  });

  test("POST /customize: each destination namespace once; no Namespace rule without destinations or with an invalid spec (a rule without names would select every Namespace)", async () => {
    const customizeWith = async (spec: unknown) => {
      const request = fixture("customize-request.json");
      request.parent.spec = spec;
      return ((await post("/customize", request)).json() as { relatedResources: { resource: string; names: string[] }[] }).relatedResources.filter((r) => r.resource === "namespaces");
    };
    const spec = { caCertConfigMap: [{ name: "ca", namespace: "b" }, { name: "ca", namespace: "a" }], clientCertSecret: [{ name: "client", namespace: "b" }] };
    assert.deepEqual(await customizeWith(spec), [{ apiVersion: "v1", resource: "namespaces", names: ["a", "b"] }]);
    assert.deepEqual(await customizeWith({}), []);
    assert.deepEqual(await customizeWith({ ...spec, replicas: 0 }), []);
  });

  test("POST /finalize answers the hook format", async () => {
    const reply = await post("/finalize", fixture("finalize-request.json"));
    assert.equal(reply.statusCode, 200, reply.body);
    const response = reply.json() as HookResponse;
    assert.deepEqual(Object.keys(response).filter((k) => !HOOK_RESPONSE_FIELDS.has(k)), []);
    assert.equal(response.finalized, false);
    assertValidChildren(response.children);
  });

  test("an invalid parent gets Ready=False with the reason, and no child the API server would reject", async () => {
    const request = fixture("sync-request.json");
    request.parent.metadata.name = "Not_A.Valid-Name";
    request.parent.spec.replicas = 0;
    const response = (await post("/sync", request)).json() as HookResponse;
    assert.deepEqual(response.children, []);
    const readyCondition = (response.status as any).conditions[0];
    assert.equal(readyCondition.status, "False");
    assert.equal(readyCondition.reason, "InvalidSpec");
    assert.match(readyCondition.message, /metadata\.name must be a DNS-1035 label/);
    assert.match(readyCondition.message, /spec\.replicas: must be >= 1 \(got 0\)/);
  });

  const badRequests: [string, string, string | object, number, RegExp][] = [
    ["malformed JSON", "/sync", "{not json", 400, /^\{"code":"BadRequest","message":"request body is not valid JSON at line 1, column 2: expected a property name in double quotes or '\}'"\}$/],
    ["JSON broken on a later line", "/finalize", '{\n  "parent": {},\n  "children": {"Secret.v1": {"ns/x": {"data": {"tls.key": "c2VjcmV0"} "x"}}}\n}', 400, /not valid JSON at line 3, column 71: expected ',' or '\}'/],
    ["an empty body", "/customize", "", 400, /"request body is empty: a hook request is a JSON object"/],
    ["a __proto__ key", "/sync", '{"parent": {"__proto__": {"polluted": true}}, "children": {}}', 400, /"request body has a __proto__ or constructor\.prototype key, which is refused"/],
    ["no parent", "/sync", { children: {} }, 400, /body: is required|parent/],
    ["no children", "/sync", { parent: fixture("sync-request.json").parent }, 400, /children/],
    ["a parent of another kind", "/sync", { ...fixture("sync-request.json"), parent: { ...fixture("sync-request.json").parent, kind: "Pod" } }, 400, /parent\.kind/],
    ["children of the wrong shape", "/finalize", { ...fixture("sync-request.json"), children: { "Secret.v1": { "ns/x": "text" } } }, 400, /children\.Secret\.v1\.ns\/x: must be object/],
    ["a customize request without parent", "/customize", {}, 400, /parent/],
  ];
  for (const [what, url, payload, status, body] of badRequests) {
    test(`${what} → ${status} with a JSON error naming the problem`, async () => {
      const reply = typeof payload === "string" ? await app.inject({ method: "POST", url, payload, headers: { "content-type": "application/json" } }) : await post(url, payload);
      assert.equal(reply.statusCode, status, reply.body);
      assert.equal(reply.headers["content-type"]?.toString().startsWith("application/json"), true);
      assert.match(reply.body, body);
    });
  }

  test("a body cut short says where, and quotes none of it (it may carry Secret data)", async () => {
    const secret = "c2VjcmV0LXZhbHVl";
    const reply = await app.inject({ method: "POST", url: "/sync", payload: `{"parent": {"x": "${secret}"`, headers: { "content-type": "application/json" } });
    assert.equal(reply.statusCode, 400);
    assert.match(reply.json().message, /^request body is not valid JSON at line 1, column 36: the body ends early: expected ',' or '\}'$/);
    const broken = await app.inject({ method: "POST", url: "/sync", payload: `{"a": "${secret}\u0001"}`, headers: { "content-type": "application/json" } });
    assert.match(broken.json().message, /column 24: a control character .* must be escaped/);
    assert.ok(!reply.body.includes(secret) && !broken.body.includes(secret));
  });

  test("an oversized body → 413 naming the limit and BODY_LIMIT_BYTES", async () => {
    const small = buildApp(testConfig({ BODY_LIMIT_BYTES: "65536" }));
    const reply = await small.inject({ method: "POST", url: "/sync", payload: { ...fixture("sync-request.json"), padding: "x".repeat(70_000) } });
    assert.equal(reply.statusCode, 413);
    assert.deepEqual(reply.json(), {
      code: "RequestEntityTooLarge",
      message: "request body is larger than the hook server's limit, BODY_LIMIT_BYTES=65536 (64 KiB); raise BODY_LIMIT_BYTES: every request carries all of a tenant's observed Secrets",
    });
    await small.close();
  });

  // Metacontroller always sends application/json; every hook refuses anything else the same way,
  // before reading the body, and a wrong method or route stays a 405 or 404 whatever the type.
  const mediaTypes: [string, Record<string, string>, string | undefined, number, RegExp][] = [
    ["no content type", {}, JSON.stringify(fixture("sync-request.json")), 415, /^the hooks take a JSON body with content-type: application\/json; this request has no content-type$/],
    ["no content type and no body", {}, undefined, 415, /this request has no content-type$/],
    ["text/plain", { "content-type": "text/plain" }, "{}", 415, /this request has content-type: text\/plain$/],
    ["form data, as curl -d sends by default", { "content-type": "application/x-www-form-urlencoded" }, "a=b", 415, /content-type: application\/x-www-form-urlencoded$/],
    ["application/json with a charset, in any case", { "content-type": "Application/JSON; charset=utf-8" }, JSON.stringify(fixture("sync-request.json")), 200, /"children"/],
  ];
  for (const [what, headers, payload, status, message] of mediaTypes) {
    test(`content type: ${what} → ${status} on every hook`, async () => {
      for (const url of ["/sync", "/finalize", "/customize"]) {
        const reply = await app.inject({ method: "POST", url, headers, ...(payload === undefined ? {} : { payload }) });
        assert.equal(reply.statusCode, status, `${url}: ${reply.body}`);
        if (status === 415) assert.equal(reply.json().code, "UnsupportedMediaType");
        assert.match(status === 415 ? reply.json().message : reply.body, url === "/customize" && status === 200 ? /relatedResources/ : message);
      }
    });
  }

  test("a wrong method or route keeps its 405 or 404 whatever the content type", async () => {
    const put = await app.inject({ method: "PUT", url: "/sync", payload: "x", headers: { "content-type": "text/plain" } });
    assert.equal(put.statusCode, 405);
    const missing = await app.inject({ method: "POST", url: "/nope", payload: "x", headers: { "content-type": "text/plain" } });
    assert.equal(missing.statusCode, 404);
  });

  test("wrong method → 405 with Allow; unknown route → 404", async () => {
    const get = await app.inject({ method: "GET", url: "/sync" });
    assert.equal(get.statusCode, 405);
    assert.equal(get.headers.allow, "POST");
    const missing = await app.inject({ method: "POST", url: "/nope", payload: {} });
    assert.equal(missing.statusCode, 404);
    assert.equal(missing.json().code, "NotFound");
  });

  test("a byte-identical steady-state request is answered from the answer cache, identically, until stableUntil", async () => {
    let clock = new Date("2026-11-22T12:00:00Z");
    const cachingApp = buildApp(config, { now: () => clock, logStream: logs });
    const request = fixture("sync-request.json");
    const first = (await cachingApp.inject({ method: "POST", url: "/sync", payload: request })).json() as HookResponse;
    const steady = JSON.stringify(nextRequest(request, first));
    const send = () => cachingApp.inject({ method: "POST", url: "/sync", payload: steady, headers: { "content-type": "application/json" } });
    const computed = await send();
    logText = "";
    const cached = await send();
    assert.equal(cached.body, computed.body);
    assert.equal(JSON.parse(logText.trim().split("\n").at(-1)!).fromCache, true);
    // Months later the leaves are due: the same request is computed again, and differs.
    clock = new Date("2027-09-01T00:00:00Z");
    logText = "";
    const later = await send();
    assert.equal(JSON.parse(logText.trim().split("\n").at(-1)!).fromCache, undefined);
    assert.notEqual(later.body, computed.body);
    await cachingApp.close();
  });

  test("the proxy pods and the cleanup Job meet the restricted Pod Security Standard", async () => {
    const podsOf = (children: KubeObject[]) => children.filter((c) => c.kind === "Deployment" || c.kind === "Job").map((c) => (c.spec as any).template);
    const pods = podsOf(((await post("/sync", fixture("sync-request.json"))).json() as HookResponse).children);
    const finalizeRequest = fixture("finalize-request.json");
    delete finalizeRequest.children["Deployment.apps/v1"]["kube-apiserver-storage/etcd-sample-apiserver"];
    pods.push(...podsOf(((await post("/finalize", finalizeRequest)).json() as HookResponse).children));
    assert.equal(pods.length, 2, "the proxy pod and the Job pod");
    for (const pod of pods) assert.deepEqual(restrictedViolations(pod.spec, pod.metadata?.annotations), []);
  });

  test("every field of the EtcdStorage schema has a description (kubectl explain)", () => {
    const missing: string[] = [];
    const walk = (node: any, path: string) => {
      for (const [name, child] of Object.entries<any>(node.properties ?? {})) {
        // ObjectMeta keeps its own documentation: a CRD cannot describe it (kubernetes/kubernetes#77653).
        if (name === "metadata") continue;
        if (!child.description) missing.push(`${path}.${name}`);
        walk(child, `${path}.${name}`);
      }
      if (node.items) walk(node.items, `${path}[]`);
    };
    walk(etcdStorageSchema, "EtcdStorage");
    assert.deepEqual(missing, []);
  });

  test("GET /healthz", async () => {
    const reply = await app.inject({ method: "GET", url: "/healthz" });
    assert.equal(reply.statusCode, 200);
  });

  test("a rejected request's error and log name the field, never its value", async () => {
    logText = "";
    const secretValue = "c2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw==";
    const request = fixture("sync-request.json");
    request.children["Secret.v1"] = { "ns/x": { apiVersion: "v1", kind: "Secret", metadata: { name: "x", namespace: "ns" }, data: secretValue } };
    const reply = await post("/sync", request);
    assert.equal(reply.statusCode, 400);
    assert.match(reply.body, /children\.Secret\.v1\.ns\/x\.data: must be object,null/);
    assert.ok(!reply.body.includes(secretValue) && !logText.includes(secretValue));
  });

  test("logs: one JSON line per hook call, no secret material", async () => {
    logText = "";
    const request = fixture("sync-request.json");
    const response = (await post("/sync", request)).json() as HookResponse;
    await post("/sync", nextRequest(request, response));
    const lines = logText.trim().split("\n").map((line) => JSON.parse(line));
    const calls = lines.filter((line) => line.msg === "hook call");
    assert.equal(calls.length, 2);
    assert.deepEqual(Object.keys(calls[0]).filter((k) => ["hook", "tenant", "outcome", "durationMs"].includes(k)).sort(), ["durationMs", "hook", "outcome", "tenant"]);
    assert.doesNotMatch(logText, /PRIVATE KEY|BEGIN CERTIFICATE/);
    const secretValues = response.children.filter((c) => c.kind === "Secret").flatMap((c) => Object.values(c.data as Record<string, string>));
    for (const value of secretValues) assert.ok(!logText.includes(value.slice(0, 40)), "no base64 Secret data in the logs");
  });
});
