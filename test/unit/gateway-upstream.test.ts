// The gateway's connection to core etcd (gateway/core/upstream.ts): which member a gateway dials first.
// Failover between members runs against a real 3-member cluster in e2e/faults.test.ts.
import assert from "node:assert/strict";
import { test } from "node:test";
import { createLogger } from "../../gateway/log.ts";
import { GrpcError } from "../../gateway/wire/grpc.ts";
import { CoreConnection } from "../../gateway/core/upstream.ts";

// Nothing listens on these ports: each dial is refused at once, and the refusal lists the endpoints in the order tried.
const ENDPOINTS = ["https://127.0.0.1:1", "https://127.0.0.1:2", "https://127.0.0.1:3"];
const tls = { ca: Buffer.alloc(0), cert: Buffer.alloc(0), key: Buffer.alloc(0) };

test("gateways start at different members, and each tries every member once before it gives up", async () => {
  const first = new Set<string>();
  for (let i = 0; i < 20; i++) {
    const core = new CoreConnection(ENDPOINTS, tls, createLogger("silent"));
    const refusal = await core.open("/etcdserverpb.KV/Range", {}).then(
      () => assert.fail("nothing listens there"),
      (error: unknown) => error,
    );
    core.close();
    assert.ok(refusal instanceof GrpcError);
    const tried = [...refusal.message.matchAll(/https:\/\/127\.0\.0\.1:\d/g)].map((match) => match[0]);
    assert.deepEqual([...tried].sort(), ENDPOINTS, refusal.message);
    first.add(tried[0]!);
  }
  // All 20 at one member would happen once in 3^19 runs.
  assert.ok(first.size > 1, `every gateway started at ${[...first].join(", ")}`);
});
