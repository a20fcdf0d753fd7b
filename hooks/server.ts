// The process: read the configuration, serve, and stop cleanly on SIGTERM (in-flight hooks finish).
import { buildApp } from "./app.ts";
import { ConfigError, loadConfig, type Config } from "./config.ts";

let config: Config;
try {
  config = loadConfig(process.env);
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`invalid configuration: ${error.message}\n`);
  process.exit(2);
}

const app = buildApp(config);
await app.listen({ port: config.port, host: config.host });

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.once(signal, () => {
    app.log.info({ signal }, "shutting down: finishing in-flight requests");
    app.close().then(
      () => process.exit(0),
      (error: unknown) => {
        app.log.error({ err: error }, "shutdown failed");
        process.exit(1);
      },
    );
  });
}
