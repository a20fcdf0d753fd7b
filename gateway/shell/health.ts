// The plain-HTTP side of a gateway, for the kubelet and Prometheus (neither presents a client
// certificate): /livez answers while the process serves; /readyz reads through to core etcd, so
// a gateway that cannot reach it leaves the Service; /metrics.
import type { Server } from "node:net";
import type { Logger } from "../log.ts";
import { Status, frame, frameWriter } from "../wire/grpc.ts";
import { assertConfined, KEYED_REQUESTS } from "../keys.ts";
import { range } from "../api/kv.ts";
import { CONTENT_TYPE } from "./exposition.ts";
import { serveHttp1, type Answer } from "./http1.ts";
import type { GatewayMetrics } from "./metrics.ts";
import type { CallContext } from "../calls/method.ts";
import type { CoreConnection } from "../core/upstream.ts";

// A linearizable count of one key, as kube-apiserver's own etcd check reads <prefix>/health.
const READINESS_TIMEOUT = "2S";

function readinessRequest(ctx: CallContext): Buffer {
  const tenant = frameWriter(16);
  tenant.bytesField(1, Buffer.from("health"));
  tenant.varintField(9, 1); // count_only
  const { framed } = range.request(frame(tenant).subarray(5), ctx);
  assertConfined(ctx.keyspace, KEYED_REQUESTS.RangeRequest, framed, 5);
  return framed;
}

export interface HealthState {
  /** False once the gateway is shutting down: readiness fails first, so the Service stops sending. */
  serving: boolean;
  /** Not ready until the tenant's usage is counted: until then no write could be admitted. */
  usage: { counting: boolean };
}

export function startHealthServer(host: string, port: number, ctx: CallContext, core: CoreConnection, metrics: GatewayMetrics, state: HealthState, log: Logger): Promise<Server> {
  const probe = readinessRequest(ctx);
  const text = (status: number, body: string): Answer => ({ status, body });
  return serveHttp1(host, port, async (method, target) => {
    try {
      if (method !== "GET") return text(405, "GET only\n");
      switch (target) {
        case "/livez":
          return text(200, "ok\n");
        case "/readyz": {
          if (!state.serving) return text(503, "shutting down\n");
          if (state.usage.counting) return text(503, "counting the tenant's usage\n");
          const answer = await core.call("/etcdserverpb.KV/Range", { "grpc-timeout": READINESS_TIMEOUT }, probe, 4096);
          return answer.code === Status.OK ? text(200, "ok\n") : text(503, `core etcd: ${answer.message || `gRPC status ${answer.code}`}\n`);
        }
        case "/metrics":
          return { status: 200, body: await metrics.exposition(), type: CONTENT_TYPE };
        default:
          return text(404, "/livez, /readyz or /metrics\n");
      }
    } catch (error) {
      log.error({ err: (error as Error).message }, "health endpoint failed");
      return text(500, "internal error\n");
    }
  });
}
