// The process: read the configuration, serve, and stop cleanly on SIGTERM (in-flight hooks finish).
// A setting the server cannot run with, found while reading it or while listening, ends it with
// exit code 2 and one line naming the variable.
import { buildApp } from "./app.ts";
import { ConfigError, effectiveConfiguration, listenRefusal, loadConfig, type Config } from "./config.ts";

function refuse(error: ConfigError): never {
  process.stderr.write(`invalid configuration: ${error.message}\n`);
  process.exit(2);
}

let config: Config;
try {
  config = loadConfig(process.env);
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  refuse(error);
}

const app = buildApp(config);
app.log.info({ configuration: effectiveConfiguration(config) }, "effective configuration");
try {
  await app.listen({ port: config.port, host: config.host });
} catch (error) {
  const refusal = listenRefusal(error, config);
  if (!refusal) throw error;
  refuse(refusal);
}

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
