// The tenant gateway's process: read flags and TLS files (a bad one exits 2 naming the flag),
// serve the tenant's mTLS gRPC endpoint and the plain-HTTP health port, reload certificates as the
// mounted files change, and on SIGTERM fail readiness, end watch streams (clients move to another
// replica) and let unary calls in flight finish.
import { SERVED_METHODS } from "./api/served.ts";
import { createLogger } from "./log.ts";
import { ConfigError, describeConfig, parseFlags, type GatewayConfig } from "./shell/config.ts";
import { Status, endWithStatus } from "./wire/grpc.ts";
import { startHealthServer, type HealthState } from "./shell/health.ts";
import { TenantKeyspace } from "./keys.ts";
import { HeldLeases, LeaseScope } from "./tenant/leases.ts";
import { DEFAULT_LIMITS } from "./tenant/limits.ts";
import { GatewayMetrics } from "./shell/metrics.ts";
import type { CallContext } from "./calls/method.ts";
import { Proxy } from "./calls/proxy.ts";
import { Quota } from "./tenant/quota.ts";
import { loadSide, watchMaterial } from "./shell/tls.ts";
import { startMemoryReducer } from "./shell/memory-reducer.ts";
import { TenantServer } from "./shell/tenant-server.ts";
import { CoreConnection } from "./core/upstream.ts";
import { TenantUsage } from "./tenant/usage.ts";

const SHUTDOWN_GRACE_MS = 10_000;

function configure(): { config: GatewayConfig; serving: ReturnType<typeof loadSide>; core: ReturnType<typeof loadSide> } {
  try {
    const config = parseFlags(process.argv.slice(2));
    return { config, serving: loadSide(config, "serving"), core: loadSide(config, "core") };
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`invalid configuration: ${error.message}\n`);
    process.exit(2);
  }
}

const { config, serving, core: coreTls } = configure();
const log = createLogger(config.logLevel, { tenant: config.tenant });
const metrics = new GatewayMetrics(config.tenant);
const keyspace = new TenantKeyspace(config.prefix);
const core = new CoreConnection(config.endpoints, coreTls, log);
const usage = new TenantUsage(core, keyspace, log);
const quota = new Quota({ ...config.quota, replicas: config.replicas, maxRequestBytes: DEFAULT_LIMITS.maxRequestBytes }, usage, (reason) => metrics.refused(reason));
const ctx: CallContext = {
  keyspace,
  leases: new LeaseScope(config.prefix),
  limits: DEFAULT_LIMITS,
  openWatches: { count: 0 },
  heldLeases: new HeldLeases(),
  boundReached: (bound) => metrics.limitRefused(bound),
  storage: { usedBytes: () => usage.usedBytes, largestObjectBytes: () => usage.largestObjectBytes, quotaBytes: () => config.quota.storageBytes },
};
metrics.storage(() => usage.usedBytes, config.quota);
usage.onConfirmation((how) => metrics.confirmed(how));
metrics.held(() => ctx.openWatches.count, () => ctx.heldLeases.size);
const proxy = new Proxy(SERVED_METHODS, ctx, core, metrics, log, quota);
const state: HealthState = { serving: true, usage };

const server = new TenantServer(serving, (stream, headers, refusal) => {
  if (refusal) {
    endWithStatus(stream, Status.UNAUTHENTICATED, `etcdstorage gateway: ${refusal}`);
    // Counted as any call is (a method not served under one label): an API server whose certificate went wrong shows on /metrics.
    const path = String(headers[":path"]);
    metrics.call(SERVED_METHODS.has(path) ? path : "unimplemented", Status.UNAUTHENTICATED, 0);
    return;
  }
  proxy.handle(stream, headers);
}, log);
const sessions = server.sessions;

const stopWatching = watchMaterial(config, { serving, core: coreTls }, (side, material) => {
  if (side === "serving") server.setSecureContext(material);
  else core.reload(material);
}, log);

await server.listen(config.listen.port, config.listen.host).catch((error: NodeJS.ErrnoException) => {
  process.stderr.write(`invalid configuration: --listen-address: cannot listen on ${config.listen.host}:${config.listen.port} (${error.code ?? error.message})\n`);
  process.exit(2);
});
const health = await startHealthServer(config.health.host, config.health.port, ctx, core, metrics, state, log).catch((error: NodeJS.ErrnoException) => {
  process.stderr.write(`invalid configuration: --health-address: cannot listen on ${config.health.host}:${config.health.port} (${error.code ?? error.message})\n`);
  process.exit(2);
});
usage.start();
startMemoryReducer();
log.info({ config: describeConfig(config) }, "gateway serving");

let stopping = false;
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.once(signal, () => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, sessions: sessions.size }, "shutting down: readiness fails, streams end, calls in flight finish");
    state.serving = false;
    stopWatching();
    usage.stop();
    proxy.endStreams();
    server.close();
    const deadline = setTimeout(() => server.destroy(), SHUTDOWN_GRACE_MS);
    const finish = () => {
      clearTimeout(deadline);
      core.close();
      health.close();
      log.info("stopped");
      process.exit(0);
    };
    if (sessions.size === 0) finish();
    else {
      const check = setInterval(() => {
        if (sessions.size === 0) {
          clearInterval(check);
          finish();
        }
      }, 50);
    }
  });
}
