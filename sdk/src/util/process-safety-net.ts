import client, { Registry } from "prom-client";

/** Structured logger; pino's Logger satisfies it. */
export interface SafetyNetLogger {
  error(obj: object, msg: string): void;
}

export interface ProcessSafetyNetOptions {
  logger: SafetyNetLogger;
  /** Where the counter `<metricPrefix>_uncaught_errors_total{kind}` is registered. Default: a new registry (returned). */
  metrics?: Registry;
  /** "kas" or "agentk": the counter's prefix. */
  metricPrefix: string;
  /** The process to watch. Default: `process` (tests pass an emitter of their own). */
  target?: Pick<NodeJS.Process, "on" | "off">;
}

/** What reached the top of the process: an exception nothing caught, or a rejection nothing handled. */
export type UncaughtKind = "uncaughtException" | "unhandledRejection";

/**
 * The process-level safety net of `kas` and `agentk`: an exception nobody caught or a promise
 * rejection nobody handled is logged (error level, with its stack) and counted, never silent, and
 * the process keeps running. Every listener answers bad input on the one request it concerns;
 * what still reaches the top is a bug confined to one connection's callback (see
 * docs/security.md, "Process safety net", for why the process does not exit). Alert on the
 * counter. Returns the registry holding the counter (for the process's `/metrics`) and a function
 * that removes the net.
 */
export function installProcessSafetyNet(options: ProcessSafetyNetOptions): { metrics: Registry; remove(): void } {
  const target = options.target ?? process;
  const metrics = options.metrics ?? new Registry();
  const name = `${options.metricPrefix}_uncaught_errors_total`;
  const counter =
    (metrics.getSingleMetric(name) as client.Counter<"kind"> | undefined) ??
    new client.Counter({
      name,
      help: "Exceptions nothing caught and promise rejections nothing handled, by kind; the process kept running. Each one is a bug: see the error log.",
      labelNames: ["kind"] as const,
      registers: [metrics],
    });
  // Present at 0 from the start, so an alert on it has a series to watch.
  counter.inc({ kind: "uncaughtException" }, 0);
  counter.inc({ kind: "unhandledRejection" }, 0);
  const report = (kind: UncaughtKind, err: unknown) => {
    counter.inc({ kind });
    try {
      options.logger.error({ err, kind }, `${kind === "uncaughtException" ? "uncaught exception" : "unhandled promise rejection"}: a bug; the process keeps running`);
    } catch {
      // A logger that throws must not turn the net into a loop.
    }
  };
  const onException = (err: unknown) => report("uncaughtException", err);
  const onRejection = (reason: unknown) => report("unhandledRejection", reason);
  target.on("uncaughtException", onException);
  target.on("unhandledRejection", onRejection);
  return {
    metrics,
    remove() {
      target.off("uncaughtException", onException);
      target.off("unhandledRejection", onRejection);
    },
  };
}
