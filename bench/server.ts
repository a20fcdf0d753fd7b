// One server under load, in its own process so that the load generator does not share its CPU
// and its RSS is the server's alone. `node bench/server.ts app|uncached|bare`; talks to bench.ts over IPC.
import Fastify, { LogController, type FastifyInstance } from "fastify";
import { buildApp } from "../hooks/app.ts";
import { testConfig } from "../test/support/requests.ts";

const kind = process.argv[2];
const config = testConfig({ LOG_LEVEL: "silent" });

function bareApp(): FastifyInstance {
  // The floor for any JSON hook: the same Fastify, body limit and logger, parsing the body and
  // echoing the observed children back, with no validation and no work.
  const app = Fastify({ logger: { level: "silent" }, bodyLimit: config.bodyLimitBytes, logController: new LogController({ disableRequestLogging: true }) });
  app.post("/sync", async (request) => {
    const body = request.body as { children: Record<string, Record<string, unknown>> };
    return { children: Object.values(body.children).flatMap(Object.values) };
  });
  return app;
}

const app = kind === "bare" ? bareApp() : buildApp(config, { answerCache: kind !== "uncached" });
await app.listen({ host: "127.0.0.1", port: 0 });
const address = app.server.address();
process.send!({ port: typeof address === "object" && address ? address.port : 0 });

process.on("message", (message: { type: string }) => {
  if (message.type === "memory") {
    // RSS is what the pod pays, as it is; the heap left after a full collection is what a leak grows.
    const { rss } = process.memoryUsage();
    globalThis.gc?.();
    process.send!({ rss, heapUsed: process.memoryUsage().heapUsed });
  }
});
process.on("disconnect", () => void app.close().then(() => process.exit(0)));
