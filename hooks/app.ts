// The HTTP shell around the pure hooks: routing, body limits, validation, error bodies, logs.
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import type { Config } from "./config.ts";
import { customize } from "./customize.ts";
import { finalize } from "./finalize.ts";
import { createMetrics, type HookName } from "./metrics.ts";
import { parseCustomizeRequest, parseHookRequest } from "./request.ts";
import { sync, type HookResult } from "./sync.ts";
import type { HookRequest } from "./observed.ts";

export interface AppOptions {
  /** The clock; tests move it. */
  now?: () => Date;
  /** Where logs go (tests capture them); defaults to stdout. */
  logStream?: NodeJS.WritableStream;
}

type Hook = (request: HookRequest, config: Config, now: Date) => Promise<HookResult>;

export function buildApp(config: Config, options: AppOptions = {}): FastifyInstance {
  const now = options.now ?? (() => new Date());
  const app = Fastify({
    logger: { level: config.logLevel, ...(options.logStream ? { stream: options.logStream } : {}) },
    bodyLimit: config.bodyLimitBytes,
    // One line per hook call is written by the handlers, with tenant and outcome; never bodies.
    logController: new LogController({ disableRequestLogging: true }),
  });
  const metrics = createMetrics();

  const badRequest = (request: FastifyRequest, reply: FastifyReply, hook: HookName, problems: string[], started: number) => {
    const durationMs = performance.now() - started;
    metrics.hookCall(hook, "BadRequest", durationMs / 1000);
    request.log.info({ hook: `/${hook}`, tenant: tenantOf(request.body), outcome: "BadRequest", problems, durationMs: round(durationMs) }, "rejected request");
    return reply.code(400).send({ code: "BadRequest", message: `invalid hook request: ${problems.join("; ")}`, problems });
  };

  const hookRoute = (name: HookName, hook: Hook) => {
    const path = `/${name}`;
    app.post(path, async (request, reply) => {
      const started = performance.now();
      const parsed = parseHookRequest(request.body);
      if (!parsed.ok) return badRequest(request, reply, name, parsed.problems, started);
      const result = await hook(parsed.request, config, now());
      const durationMs = performance.now() - started;
      metrics.hookCall(name, result.report.outcome, durationMs / 1000);
      metrics.report(result.report);
      request.log.info(
        { hook: path, tenant: result.report.tenant, outcome: result.report.outcome, durationMs: round(durationMs), issued: result.report.events.map((e) => `${e.certificate}:${e.what}`) },
        "hook call",
      );
      return result.response;
    });
  };

  hookRoute("sync", sync);
  hookRoute("finalize", finalize);

  app.post("/customize", async (request, reply) => {
    const started = performance.now();
    const parsed = parseCustomizeRequest(request.body);
    if (!parsed.ok) return badRequest(request, reply, "customize", parsed.problems, started);
    const durationMs = performance.now() - started;
    metrics.hookCall("customize", "Customized", durationMs / 1000);
    request.log.info({ hook: "/customize", tenant: parsed.request.parent.metadata.name, outcome: "Customized", durationMs: round(durationMs) }, "hook call");
    return customize(config);
  });

  app.get("/healthz", async () => ({ status: "ok" }));

  app.get("/metrics", async (_request, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));

  for (const [path, allowed] of [["/sync", "POST"], ["/finalize", "POST"], ["/customize", "POST"], ["/healthz", "GET"], ["/metrics", "GET"]] as const) {
    app.route({
      method: ["GET", "POST", "PUT", "PATCH", "DELETE"].filter((method) => method !== allowed),
      url: path,
      handler: async (_request, reply) => reply.code(405).header("allow", allowed).send({ code: "MethodNotAllowed", message: `${path} accepts ${allowed} only` }),
    });
  }

  app.setNotFoundHandler(async (request, reply) => reply.code(404).send({ code: "NotFound", message: `no route ${request.method} ${request.url}` }));

  // The hook a failed request was for, if any: a label from a fixed set, whatever the URL.
  const hookOf = (request: FastifyRequest): HookName | undefined => {
    const url = request.method === "POST" ? request.routeOptions.url : undefined;
    return url === "/sync" ? "sync" : url === "/finalize" ? "finalize" : url === "/customize" ? "customize" : undefined;
  };

  app.setErrorHandler(async (error: Error & { statusCode?: number; code?: string }, request, reply) => {
    const status = error.statusCode ?? 500;
    const hook = hookOf(request);
    // Rejected before the handler ran (bad JSON, body too large) or failed inside a hook.
    const outcome = status >= 400 && status < 500 ? "BadRequest" : "Error";
    if (hook) metrics.hookCall(hook, outcome, outcome === "Error" ? reply.elapsedTime / 1000 : undefined);
    const line = { hook: request.routeOptions.url, tenant: tenantOf(request.body), outcome, durationMs: round(reply.elapsedTime) };
    if (outcome === "BadRequest") {
      request.log.info({ ...line, code: error.code }, "rejected request");
      return reply.code(status).send({ code: error.code ?? "BadRequest", message: error.message });
    }
    // Never leak internals (or the observed Secrets) to the caller or the log.
    request.log.error({ ...line, err: { type: error.name, message: error.message, stack: error.stack } }, "hook failed");
    return reply.code(500).send({ code: "InternalError", message: "the hook failed; see the hook server's log" });
  });

  return app;
}

/** The parent's name for the log, if the body has a plausible one; nothing else of the body is logged. */
function tenantOf(body: unknown): string | undefined {
  const name = (body as { parent?: { metadata?: { name?: unknown } } } | undefined)?.parent?.metadata?.name;
  return typeof name === "string" && name.length <= 253 ? name : undefined;
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
