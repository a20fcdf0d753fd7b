// The HTTP shell around the pure hooks: routing, body limits, validation, error bodies, logs.
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import type { Config } from "./config.ts";
import { customize } from "./customize.ts";
import { finalize } from "./finalize.ts";
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
    disableRequestLogging: true,
  });

  const hookRoute = (path: string, hook: Hook) =>
    app.post(path, async (request, reply) => {
      const started = performance.now();
      const parsed = parseHookRequest(request.body);
      if (!parsed.ok) return badRequest(request, reply, path, parsed.problems);
      const result = await hook(parsed.request, config, now());
      request.log.info(
        { hook: path, tenant: result.report.tenant, outcome: result.report.outcome, durationMs: round(performance.now() - started), issued: result.report.events.map((e) => `${e.certificate}:${e.what}`) },
        "hook call",
      );
      return result.response;
    });

  hookRoute("/sync", sync);
  hookRoute("/finalize", finalize);

  app.post("/customize", async (request, reply) => {
    const parsed = parseCustomizeRequest(request.body);
    if (!parsed.ok) return badRequest(request, reply, "/customize", parsed.problems);
    request.log.info({ hook: "/customize", tenant: parsed.request.parent.metadata.name, outcome: "Customized" }, "hook call");
    return customize(config);
  });

  app.get("/healthz", async () => ({ status: "ok" }));

  for (const [path, allowed] of [["/sync", "POST"], ["/finalize", "POST"], ["/customize", "POST"], ["/healthz", "GET"]] as const) {
    app.route({
      method: ["GET", "POST", "PUT", "PATCH", "DELETE"].filter((method) => method !== allowed),
      url: path,
      handler: async (_request, reply) => reply.code(405).header("allow", allowed).send({ code: "MethodNotAllowed", message: `${path} accepts ${allowed} only` }),
    });
  }

  app.setNotFoundHandler(async (request, reply) => reply.code(404).send({ code: "NotFound", message: `no route ${request.method} ${request.url}` }));

  app.setErrorHandler(async (error: Error & { statusCode?: number; code?: string }, request, reply) => {
    const status = error.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      request.log.info({ hook: request.routeOptions.url, outcome: "BadRequest", code: error.code }, "rejected request");
      return reply.code(status).send({ code: error.code ?? "BadRequest", message: error.message });
    }
    // Never leak internals (or the observed Secrets) to the caller or the log.
    request.log.error({ hook: request.routeOptions.url, outcome: "Error", err: { type: error.name, message: error.message, stack: error.stack } }, "hook failed");
    return reply.code(500).send({ code: "InternalError", message: "the hook failed; see the hook server's log" });
  });

  return app;
}

function badRequest(request: FastifyRequest, reply: FastifyReply, hook: string, problems: string[]) {
  request.log.info({ hook, outcome: "BadRequest", problems }, "rejected request");
  return reply.code(400).send({ code: "BadRequest", message: `invalid hook request: ${problems.join("; ")}`, problems });
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
