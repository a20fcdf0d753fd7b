// The HTTP shell around the pure hooks: routing, body limits, validation, error bodies, logs.
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import type { Config } from "./config.ts";
import { customizeBackup, finalizeBackup, syncBackup } from "./backup.ts";
import { customize } from "./customize.ts";
import { finalize } from "./finalize.ts";
import { jsonSyntaxError } from "./json-syntax.ts";
import { createMetrics, type HookName } from "./metrics.ts";
import { parseBackupCustomizeRequest, parseBackupHookRequest, parseCustomizeRequest, parseHookRequest } from "./request.ts";
import { LruCache } from "./lru-cache.ts";
import { sync, type SyncReport } from "./sync.ts";

export interface AppOptions {
  /** The clock; tests move it. */
  now?: () => Date;
  /** Where logs go (tests capture them); defaults to stdout. */
  logStream?: NodeJS.WritableStream;
  /** Reuse steady-state answers (default); off, every request is computed (the benchmark compares). */
  answerCache?: boolean;
}


// Room for the steady-state answers of about a thousand tenants with two destinations each
// (a 30 KiB request and a 30 KiB answer): some 64 MiB at most, then the least recent go.
const ANSWER_CACHE_ENTRIES = 2048;
const ANSWER_CACHE_CHARS = 32 * 1024 * 1024;

/** Each hook's path: its route, its 405 answers and the hook label of a failed request come from here. */
const HOOK_PATHS: Record<HookName, string> = {
  sync: "/sync",
  finalize: "/finalize",
  customize: "/customize",
  "backup-sync": "/backup/sync",
  "backup-finalize": "/backup/finalize",
  "backup-customize": "/backup/customize",
};

export function buildApp(config: Config, options: AppOptions = {}): FastifyInstance {
  const now = options.now ?? (() => new Date());
  const app = Fastify({
    logger: { level: config.logLevel, ...(options.logStream ? { stream: options.logStream } : {}) },
    bodyLimit: config.bodyLimitBytes,
    // One line per hook call is written by the handlers, with tenant and outcome; never bodies.
    logController: new LogController({ disableRequestLogging: true }),
  });
  const metrics = createMetrics();

  // Every hook takes application/json, which Metacontroller sends. The body stays text until the
  // route reads it: /sync first looks its answer up by the exact bytes.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("application/json", { parseAs: "string" }, (_request, body, done) => done(null, body));
  const parseJson = app.getDefaultJsonParser("error", "error");
  // Parsed bodies, for the tenant in the log line of a hook that fails.
  const bodies = new WeakMap<FastifyRequest, unknown>();
  const readJson = (request: FastifyRequest) =>
    new Promise<unknown>((resolve, reject) =>
      parseJson(request, request.body as string, (error, parsed) => {
        if (error) return reject(invalidJson(request.body as string));
        bodies.set(request, parsed);
        resolve(parsed);
      }),
    );
  // Refused before the body is read, whatever it holds (an empty body included).
  const requireJson = async (request: FastifyRequest) => {
    if (!JSON_MEDIA_TYPE.test(request.headers["content-type"] ?? "")) throw unsupportedMediaType(request.headers["content-type"]);
  };

  const badRequest = (request: FastifyRequest, reply: FastifyReply, hook: HookName, problems: string[], started: number, body: unknown) => {
    const durationMs = performance.now() - started;
    metrics.hookCall(hook, "BadRequest", durationMs / 1000);
    request.log.info({ hook: `/${hook}`, tenant: tenantOf(body), outcome: "BadRequest", problems, durationMs: round(durationMs) }, "rejected request");
    return reply.code(400).send({ code: "BadRequest", message: `invalid hook request: ${problems.join("; ")}`, problems });
  };

  const recordCall = (request: FastifyRequest, hook: HookName, report: SyncReport, started: number, fromCache: boolean) => {
    const durationMs = performance.now() - started;
    metrics.hookCall(hook, report.outcome, durationMs / 1000);
    metrics.report(report);
    request.log.info(
      { hook: `/${hook}`, tenant: report.tenant, outcome: report.outcome, durationMs: round(durationMs), issued: report.events.map((e) => `${e.certificate}:${e.what}`), ...(fromCache ? { fromCache } : {}) },
      "hook call",
    );
  };

  app.post(HOOK_PATHS.finalize, { onRequest: requireJson }, async (request, reply) => {
    const started = performance.now();
    const body = await readJson(request);
    const parsed = parseHookRequest(body);
    if (!parsed.ok) return badRequest(request, reply, "finalize", parsed.problems, started, body);
    const result = await finalize(parsed.request, config, now());
    recordCall(request, "finalize", result.report, started, false);
    return result.response;
  });

  // The steady-state sync: Metacontroller resyncs every tenant periodically with a body that is
  // byte for byte the last one while nothing changed. Such a request is answered with the answer
  // computed for it, as long as sync vouches that it would answer the same (report.stableUntil:
  // nothing issued, no condition changed, no certificate step due; test/unit/stable-answer.test.ts).
  // The body is parsed only when the answer has to be computed.
  const answers = new LruCache<{ payload: string; report: SyncReport; stableUntil: number }>(ANSWER_CACHE_ENTRIES, ANSWER_CACHE_CHARS);
  app.post(HOOK_PATHS.sync, { onRequest: requireJson }, async (request, reply) => {
    const started = performance.now();
    const raw = request.body as string;
    const time = now();
    const cached = options.answerCache === false ? undefined : answers.get(raw);
    if (cached && time.getTime() < cached.stableUntil) {
      recordCall(request, "sync", cached.report, started, true);
      return reply.type("application/json; charset=utf-8").send(cached.payload);
    }
    const body = await readJson(request);
    const parsed = parseHookRequest(body);
    if (!parsed.ok) return badRequest(request, reply, "sync", parsed.problems, started, body);
    const result = await sync(parsed.request, config, time);
    const payload = JSON.stringify(result.response);
    if (result.report.stableUntil && options.answerCache !== false) answers.set(raw, { payload, report: result.report, stableUntil: result.report.stableUntil.getTime() });
    recordCall(request, "sync", result.report, started, false);
    return reply.type("application/json; charset=utf-8").send(payload);
  });

  // Customize: which related objects the sync of a parent needs; `logged` names the parent in the log line.
  const customizeRoute = (hook: "customize" | "backup-customize", parse: typeof parseCustomizeRequest, answer: typeof customize, logged: "tenant" | "backup") =>
    app.post(HOOK_PATHS[hook], { onRequest: requireJson }, async (request, reply) => {
      const started = performance.now();
      const body = await readJson(request);
      const parsed = parse(body);
      if (!parsed.ok) return badRequest(request, reply, hook, parsed.problems, started, body);
      const durationMs = performance.now() - started;
      metrics.hookCall(hook, "Customized", durationMs / 1000);
      request.log.info({ hook: HOOK_PATHS[hook], [logged]: parsed.request.parent.metadata.name, outcome: "Customized", durationMs: round(durationMs) }, "hook call");
      return answer(parsed.request.parent, config);
    });
  customizeRoute("customize", parseCustomizeRequest, customize, "tenant");

  // The second CompositeController (etcdstoragebackup): one EtcdStorageBackup, one backup Job;
  // finalize deletes the file of a backup with deletionPolicy Delete.
  for (const [hook, answer] of [["backup-sync", syncBackup], ["backup-finalize", finalizeBackup]] as const) {
    app.post(HOOK_PATHS[hook], { onRequest: requireJson }, async (request, reply) => {
      const started = performance.now();
      const body = await readJson(request);
      const parsed = parseBackupHookRequest(body);
      if (!parsed.ok) return badRequest(request, reply, hook, parsed.problems, started, body);
      const result = answer(parsed.request, config, now());
      const durationMs = performance.now() - started;
      metrics.hookCall(hook, result.report.outcome, durationMs / 1000);
      metrics.backup(result.report);
      request.log.info({ hook: HOOK_PATHS[hook], backup: result.report.backup, tenant: result.report.tenant, outcome: result.report.outcome, durationMs: round(durationMs) }, "hook call");
      return result.response;
    });
  }

  customizeRoute("backup-customize", parseBackupCustomizeRequest, customizeBackup, "backup");

  app.get("/healthz", async () => ({ status: "ok" }));

  app.get("/metrics", async (_request, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));

  // Answered before any body is read: a wrong method is a 405 whatever the body's type.
  for (const [path, allowed] of [...Object.values(HOOK_PATHS).map((path) => [path, "POST"] as const), ["/healthz", "GET"] as const, ["/metrics", "GET"] as const]) {
    app.route({
      method: ["GET", "POST", "PUT", "PATCH", "DELETE"].filter((method) => method !== allowed),
      url: path,
      onRequest: async (_request, reply) => reply.code(405).header("allow", allowed).send({ code: "MethodNotAllowed", message: `${path} accepts ${allowed} only` }),
      handler: async () => undefined,
    });
  }

  app.setNotFoundHandler(async (request, reply) => reply.code(404).send({ code: "NotFound", message: `no route ${request.method} ${request.url}` }));

  // The hook a failed request was for, if any: a label from a fixed set, whatever the URL.
  const hookOf = (request: FastifyRequest): HookName | undefined => {
    const url = request.method === "POST" ? request.routeOptions.url : undefined;
    return (Object.keys(HOOK_PATHS) as HookName[]).find((hook) => HOOK_PATHS[hook] === url);
  };

  app.setErrorHandler(async (error: Error & { statusCode?: number; code?: string }, request, reply) => {
    // Fastify's own refusals get this server's words: what was wrong, and what to change.
    const known = error.code === "FST_ERR_CTP_BODY_TOO_LARGE" ? bodyTooLarge(config.bodyLimitBytes) : error.code === "FST_ERR_CTP_INVALID_MEDIA_TYPE" ? unsupportedMediaType(request.headers["content-type"]) : error;
    const status = known.statusCode ?? 500;
    const hook = hookOf(request);
    // Rejected before the hook ran (bad JSON, body too large, wrong content type) or failed inside it.
    const outcome = status >= 400 && status < 500 ? "BadRequest" : "Error";
    if (hook) metrics.hookCall(hook, outcome, outcome === "Error" ? reply.elapsedTime / 1000 : undefined);
    const line = { hook: request.routeOptions.url, tenant: tenantOf(bodies.get(request)), outcome, durationMs: round(reply.elapsedTime) };
    if (outcome === "BadRequest") {
      const code = known instanceof RequestError ? known.code : (STATUS_CODES[status] ?? "BadRequest");
      request.log.info({ ...line, code }, "rejected request");
      return reply.code(status).send({ code, message: known.message });
    }
    // Never leak internals (or the observed Secrets) to the caller or the log.
    request.log.error({ ...line, err: { type: error.name, message: error.message, stack: error.stack } }, "hook failed");
    return reply.code(500).send({ code: "InternalError", message: "the hook failed; see the hook server's log" });
  });

  return app;
}

const JSON_MEDIA_TYPE = /^application\/json\s*(;|$)/i;
// Reasons as Kubernetes names them (metav1.StatusReason), for refusals that are not this server's own.
const STATUS_CODES: Record<number, string> = { 400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 413: "RequestEntityTooLarge", 415: "UnsupportedMediaType" };

/** A request refused before any hook ran, with the reason as `code`. */
class RequestError extends Error {
  readonly statusCode: number;
  readonly code: string;
  constructor(statusCode: number, code: string, message: string) {
    super(message);
    this.statusCode = statusCode;
    this.code = code;
  }
}

function bodyTooLarge(limit: number): RequestError {
  const size = limit >= 1048576 ? `${Math.round((limit / 1048576) * 10) / 10} MiB` : `${Math.round((limit / 1024) * 10) / 10} KiB`;
  return new RequestError(413, "RequestEntityTooLarge", `request body is larger than the hook server's limit, BODY_LIMIT_BYTES=${limit} (${size}); raise BODY_LIMIT_BYTES: every request carries all of a tenant's observed Secrets`);
}

function unsupportedMediaType(contentType: string | undefined): RequestError {
  return new RequestError(415, "UnsupportedMediaType", `the hooks take a JSON body with content-type: application/json; this request has ${contentType ? `content-type: ${contentType.slice(0, 100)}` : "no content-type"}`);
}

function invalidJson(raw: string): RequestError {
  if (raw.trim() === "") return new RequestError(400, "BadRequest", "request body is empty: a hook request is a JSON object");
  const fault = jsonSyntaxError(raw);
  // The only other refusal of Fastify's parser: a __proto__ or constructor.prototype key.
  if (!fault) return new RequestError(400, "BadRequest", "request body has a __proto__ or constructor.prototype key, which is refused");
  return new RequestError(400, "BadRequest", `request body is not valid JSON at line ${fault.line}, column ${fault.column}: ${fault.problem}`);
}

/** The parent's name for the log, if the body has a plausible one; nothing else of the body is logged. */
function tenantOf(body: unknown): string | undefined {
  const name = (body as { parent?: { metadata?: { name?: unknown } } } | undefined)?.parent?.metadata?.name;
  return typeof name === "string" && name.length <= 253 ? name : undefined;
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
