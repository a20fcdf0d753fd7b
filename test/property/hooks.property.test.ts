// Property-based hardening: generated and mutated requests and observed states never crash the
// server, never answer 5xx, always answer a fixed point, and never drop a tenant's CA Secret.
// The counts are printed for the README's reliability section.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import type { FastifyInstance } from "fastify";
import { buildApp } from "../../hooks/app.ts";
import type { HookRequest, HookResponse, KubeObject } from "../../hooks/observed.ts";
import { coreRelated, etcdStorage, makeCorePki, namespacesRelated, nextRequest, observe, syncRequest, testConfig } from "../support/requests.ts";

const RUNS = { requests: 3000, states: 600 };
const NAMESPACES = "Namespace.v1";
// A fixed seed keeps CI reproducible; FC_SEED=<n> explores other cases (a failure prints its seed).
const seed = Number(process.env.FC_SEED ?? 20261122);
const config = testConfig();
const ns = config.proxyNamespace;
const CA_SECRETS = [`${ns}/etcd-t-serving-ca`, `${ns}/etcd-t-client-ca`];
const SPEC = {
  caCertConfigMap: [{ name: "ca", namespace: "a" }, { name: "ca", namespace: "b" }],
  clientCertSecret: [{ name: "client", namespace: "a" }, { name: "client", namespace: "b" }],
};

let app: FastifyInstance;
let steady: HookRequest;
const tally = { requests: 0, states: 0, rejected: 0, status5xx: 0, thrown: 0, childrenLost: 0 };

before(async () => {
  app = buildApp(config, { now: () => new Date("2027-03-01T00:00:00Z") });
  await app.ready();
  const first = syncRequest(etcdStorage("t", SPEC), { ...coreRelated(config, await makeCorePki(new Date("2027-01-01T00:00:00Z"), 5)), ...namespacesRelated(["a", "b"]) });
  const answer = (await app.inject({ method: "POST", url: "/sync", payload: first })).json() as HookResponse;
  steady = nextRequest(first, answer);
});
after(async () => {
  await app.close();
  console.log(`reliability: ${tally.requests} generated requests and ${tally.states} mutated observed states (${tally.rejected} of them rejected with a 4xx as malformed); ${tally.thrown} crashes, ${tally.status5xx} 5xx, ${tally.childrenLost} CA Secrets lost`);
});

async function post(url: string, payload: unknown) {
  try {
    const reply = await app.inject({ method: "POST", url, payload: JSON.stringify(payload), headers: { "content-type": "application/json" } });
    if (reply.statusCode >= 500) tally.status5xx++;
    return reply;
  } catch (error) {
    tally.thrown++;
    throw error;
  }
}

// Values that stress the readers: wrong types, garbage PEM, nulls, huge numbers.
const junk = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n", "", "%%%", "LS0tLS1CRUdJTg==", null, -1, 1e308),
);

type Mutation = ((request: HookRequest) => void) & { toString(): string };

const secretKeys = ["tls.crt", "tls.key", "ca.crt", "successor.crt", "successor.key"];
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  // a child disappears (deleted by hand, or a stale cache)
  fc.nat().map((i) => Object.assign((r: HookRequest) => {
    const entries = Object.entries(r.children).flatMap(([type, byName]) => Object.keys(byName).map((key) => [type, key] as const));
    const [type, key] = entries[i % entries.length]!;
    delete r.children[type]![key];
  }, { toString: () => `delete child #${i}` })),
  // a Secret value is damaged or replaced by junk
  fc.tuple(fc.nat(), fc.constantFrom(...secretKeys), junk, fc.boolean()).map(([i, key, value, asBase64]) => Object.assign((r: HookRequest) => {
    const secrets = Object.values(r.children["Secret.v1"] ?? {});
    const secret = secrets[i % secrets.length] as KubeObject & { data: Record<string, unknown> | null };
    if (secret?.data && typeof secret.data === "object") secret.data[key] = asBase64 && typeof value === "string" ? Buffer.from(value).toString("base64") : value;
  }, { toString: () => `Secret #${i} ${key} = ${JSON.stringify(value)}${asBase64 ? " (base64)" : ""}` })),
  // a spec field becomes anything (an object edited by hand, the CRD bypassed)
  fc.tuple(fc.constantFrom("caCertConfigMap", "clientCertSecret", "signingCertificateValidity", "servingCertificateValidity", "clientCertificateValidity", "replicas", "resources", "deletionPolicy", "quota", "extra"), junk).map(
    ([field, value]) => Object.assign((r: HookRequest) => {
      (r.parent.spec as Record<string, unknown>)[field] = value;
    }, { toString: () => `spec.${field} = ${JSON.stringify(value)}` }),
  ),
  // a spec.quota field becomes anything, or a value at, just past or far past a bound
  fc.tuple(fc.constantFrom("storage", "writeBytesPerSecond", "requestsPerSecond"), fc.oneof(junk, fc.constantFrom("1Mi", "8Gi", "8.0000001Gi", "1Ki", "1023", "0.5", "1e6", "16Mi", 1, 100000, 100001, 2.5))).map(
    ([field, value]) => Object.assign((r: HookRequest) => {
      const spec = r.parent.spec as Record<string, unknown>;
      spec.quota = { ...(spec.quota as object), [field]: value };
    }, { toString: () => `spec.quota.${field} = ${JSON.stringify(value)}` }),
  ),
  // an observed object's status or spec is anything
  fc.tuple(fc.constantFrom("Deployment.apps/v1", "Secret.v1", "ConfigMap.v1"), fc.constantFrom("status", "spec", "data"), junk).map(([type, field, value]) => Object.assign((r: HookRequest) => {
    for (const object of Object.values(r.children[type] ?? {})) if (value === null || typeof value === "object") (object as Record<string, unknown>)[field] = value;
  }, { toString: () => `every ${type} .${field} = ${JSON.stringify(value)}` })),
  // the parent's previous status is anything shaped like conditions
  fc.array(fc.record({ type: fc.constantFrom("Ready", "ProxyAvailable", "Cleanup"), status: fc.constantFrom("True", "False", "x"), lastTransitionTime: fc.string() }), { maxLength: 3 }).map(
    (conditions) => Object.assign((r: HookRequest) => {
      r.parent.status = { conditions: conditions as never };
    }, { toString: () => `parent.status.conditions = ${JSON.stringify(conditions)}` }),
  ),
  // the related core credentials go missing or get damaged
  fc.tuple(fc.constantFrom("ConfigMap.v1", "Secret.v1"), fc.boolean()).map(([type, drop]) => Object.assign((r: HookRequest) => {
    if (drop) delete r.related![type];
    else for (const object of Object.values(r.related![type] ?? {})) (object as Record<string, unknown>).data = { "ca.crt": "junk", "tls.crt": "anVuaw==" };
  }, { toString: () => `related ${type} ${drop ? "missing" : "damaged"}` })),
  // a destination namespace is deleted, is being deleted, or no Namespaces are sent at all
  fc.constantFrom("a", "b", "all").chain((name) => fc.constantFrom("missing", "deleting").map((what) => Object.assign((r: HookRequest) => {
    const namespaces = r.related![NAMESPACES];
    if (name === "all") delete r.related![NAMESPACES];
    else if (namespaces?.[name] && what === "missing") delete namespaces[name];
    else if (namespaces?.[name]) namespaces[name]!.metadata.deletionTimestamp = "2027-02-01T00:00:00Z";
  }, { toString: () => `Namespace ${name} ${name === "all" ? "not sent" : what}` }))),
);

describe("property: hostile input never costs a tenant its data", () => {
  test(`${RUNS.requests} generated request bodies: a 2xx or a 4xx with a JSON error, never a 5xx`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom("/sync", "/finalize", "/customize"), fc.oneof(fc.jsonValue(), fc.record({ parent: fc.jsonValue(), children: fc.jsonValue(), related: fc.jsonValue() })), async (url, body) => {
        tally.requests++;
        const reply = await post(url, body);
        assert.ok(reply.statusCode === 200 || (reply.statusCode >= 400 && reply.statusCode < 500), `status ${reply.statusCode}`);
        assert.equal(typeof reply.json().code === "string" || reply.statusCode === 200, true);
      }),
      { numRuns: RUNS.requests, seed },
    );
  });

  test(`${RUNS.states} mutated observed states: every answer keeps the CA Secrets and is a fixed point`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 4 }), async (mutations) => {
        tally.states++;
        const request = structuredClone(steady);
        for (const mutate of mutations) mutate(request);
        const reply = await post("/sync", request);
        // A 4xx changes nothing in the cluster (Metacontroller keeps every child and retries).
        if (reply.statusCode !== 200) {
          assert.ok(reply.statusCode >= 400 && reply.statusCode < 500, reply.body);
          tally.rejected++;
          return;
        }
        const answer = reply.json() as HookResponse;
        const answered = new Set(answer.children.map((c) => `${c.metadata.namespace}/${c.metadata.name}`));
        for (const key of CA_SECRETS) {
          if (request.children["Secret.v1"]?.[key] && !answered.has(key)) tally.childrenLost++;
          assert.ok(!request.children["Secret.v1"]?.[key] || answered.has(key), `CA Secret ${key} dropped`);
        }
        // Nothing is ever sent into a namespace Metacontroller says is missing or being deleted.
        const namespaces = request.related?.[NAMESPACES];
        if (namespaces && !(answer.status.conditions as { reason: string }[]).some((c) => c.reason === "InvalidSpec")) {
          for (const child of answer.children.filter((c) => c.metadata.namespace !== ns)) {
            const namespace = namespaces[child.metadata.namespace!];
            assert.ok(namespace && !namespace.metadata.deletionTimestamp, `${child.kind} sent into ${child.metadata.namespace}, which is missing or being deleted`);
          }
        }
        const again = (await post("/sync", nextRequest(request, answer))).json() as HookResponse;
        assert.deepEqual(again.children, answer.children, "not a fixed point");
      }),
      { numRuns: RUNS.states, seed },
    );
  });

  test("an invalid spec keeps every observed child unchanged", async () => {
    const request = structuredClone(steady);
    (request.parent.spec as Record<string, unknown>).replicas = -1;
    const answer = (await post("/sync", request)).json() as HookResponse;
    assert.deepEqual(observe(answer.children), request.children);
    const ready = (answer.status as { conditions: { type: string; status: string; message: string }[] }).conditions[0]!;
    assert.equal(ready.status, "False");
    assert.match(ready.message, /spec\.replicas: must be >= 1 \(got -1\)/);
  });
});
