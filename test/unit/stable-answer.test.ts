// The answer cache reuses an answer for a byte-identical request until report.stableUntil. That is
// safe only if sync itself would answer the same at every moment before then: checked here at
// generated moments, in every kind of steady state.
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import fc from "fast-check";
import type { HookRequest } from "../../hooks/observed.ts";
import { sync } from "../../hooks/sync.ts";
import { b64, coreRelated, DAY, etcdStorage, makeCorePki, nextRequest, QUARTERLY_SPEC, SAMPLE_SPEC, syncRequest, testConfig, type CorePki } from "../support/requests.ts";

const config = testConfig();
const T0 = new Date("2027-01-01T00:00:00Z");
const at = (days: number) => new Date(T0.getTime() + days * DAY);
let pki: CorePki;
before(async () => {
  pki = await makeCorePki(new Date(T0.getTime() - DAY), 3);
});

/** The steady request after living through `times`: at each, the answer fed back until nothing changes. */
async function steady(spec: Record<string, unknown>, times: Date[], damage?: (r: HookRequest) => void): Promise<HookRequest> {
  let request = syncRequest(etcdStorage("t", spec), coreRelated(config, pki));
  for (const time of times) {
    for (let i = 0; i < 4; i++) {
      damage?.(request);
      request = nextRequest(request, (await sync(request, config, time)).response);
    }
  }
  return request;
}

async function assertStable(request: HookRequest, computedAt: Date) {
  const first = await sync(request, config, computedAt);
  assert.ok(first.report.stableUntil, "a steady state is stable for a while");
  const until = first.report.stableUntil.getTime();
  assert.ok(until > computedAt.getTime());
  const horizon = Math.min(until, computedAt.getTime() + 10 * 365 * DAY);
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: computedAt.getTime(), max: horizon - 1 }), async (ms) => {
      const later = await sync(request, config, new Date(ms));
      assert.deepEqual(later.response, first.response, `different answer at ${new Date(ms).toISOString()}`);
    }),
    { numRuns: 40, seed: 20261122, examples: [[horizon - 1]] },
  );
  return first;
}

describe("stableUntil", () => {
  test("a plain steady state is stable until a day before the next renewal", async () => {
    const request = await steady(QUARTERLY_SPEC, [T0]);
    const { report } = await assertStable(request, at(1));
    assert.equal(report.stableUntil!.toISOString(), at(20 - 1).toISOString(), "leaves renew at day 20; resyncAfterSeconds leaves its cap a day before");
    const after = await sync(request, config, at(19.5));
    assert.equal(after.report.stableUntil, undefined);
  });

  test("during a CA rotation overlap", async () => {
    const request = await steady(QUARTERLY_SPEC, [T0, at(20.5), at(40.5), at(60.5)]);
    const { response } = await assertStable(request, at(61));
    assert.equal(((response.status as any).conditions as { reason: string }[])[2]!.reason, "CARotationInProgress");
  });

  test("with a damaged CA key (degraded)", async () => {
    const damageKey = (r: HookRequest) => {
      const secret = r.children["Secret.v1"]?.[`${config.proxyNamespace}/etcd-t-client-ca`];
      if (secret) (secret.data as Record<string, string>)["tls.key"] = b64("garbage");
    };
    const request = await steady(SAMPLE_SPEC, [T0], damageKey);
    await assertStable(request, at(1));
  });

  test("bounded by the core client certificate's expiry", async () => {
    const request = await steady(SAMPLE_SPEC, [T0]);
    const { report } = await assertStable(request, at(1));
    assert.ok(report.stableUntil!.getTime() <= T0.getTime() + 3 * 365 * DAY);
  });

  test("an invalid spec (children kept as they are)", async () => {
    const request = await steady({ ...SAMPLE_SPEC, replicas: 0 }, [T0]);
    await assertStable(request, at(1));
  });

  test("not stable when something was issued or a condition changed", async () => {
    const fresh = syncRequest(etcdStorage("t", SAMPLE_SPEC), coreRelated(config, pki));
    assert.equal((await sync(fresh, config, T0)).report.stableUntil, undefined, "first sync issues certificates");
    const request = await steady(SAMPLE_SPEC, [T0]);
    const deployment = Object.values(request.children["Deployment.apps/v1"]!)[0]!;
    deployment.status = { availableReplicas: 2, conditions: [{ type: "Available", status: "True", reason: "MinimumReplicasAvailable" }] };
    assert.equal((await sync(request, config, at(1))).report.stableUntil, undefined, "ProxyAvailable turned True just now");
  });
});
