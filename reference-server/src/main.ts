import { parseArgs } from "node:util";
import { installProcessSafetyNet } from "@kasbridge/sdk/util";
import pino from "pino";
import { loadConfig, ConfigError } from "./config.js";
import { startKas } from "./start-kas.js";

// kas: configuration and a list of modules (start-kas.ts); everything else is the SDK and the platform.
let configFile: string | undefined;
try {
  const { values } = parseArgs({ options: { config: { type: "string" }, help: { type: "boolean" } }, strict: true });
  if (values.help) {
    process.stdout.write("usage: kas [--config kas.yaml]   (environment: KAS_*; see docs/configuration.md)\n");
    process.exit(0);
  }
  configFile = values.config;
} catch (error) {
  process.stderr.write(`${(error as Error).message}\n`);
  process.exit(2);
}

let config;
try {
  config = loadConfig({ configFile, env: process.env });
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`kas: configuration error: ${error.message}\n`);
  process.exit(2);
}

const logger = pino({ name: "kas", level: config.logLevel });
// Nothing a request sends may take KAS down; what still reaches the top is logged and counted
// (kas_uncaught_errors_total on /metrics) and KAS keeps running: docs/security.md.
const { metrics } = installProcessSafetyNet({ logger, metricPrefix: "kas" });
const kas = await startKas(config, logger, { metrics }).catch((error: unknown) => {
  logger.fatal({ err: error }, "kas failed to start");
  process.exit(1);
});

let stopping = false;
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down");
    kas.close().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, "shutdown failed");
        process.exit(1);
      },
    );
  });
}
