import type { Logger } from "pino";
import type { AgentModule } from "../../../agent/agent-module.js";
import { log_level_enum } from "../../../gen/gitlab/agent/agentcfg/agentcfg_pb.js";

const pinoLevels: Record<log_level_enum, string> = {
  [log_level_enum.info]: "info",
  [log_level_enum.debug]: "debug",
  [log_level_enum.warn]: "warn",
  [log_level_enum.error]: "error",
};

/**
 * The agent half of observability: applies `observability.logging.level` of each configuration
 * to the agent's logger, without a restart (default `info`, as agentk).
 */
export function observabilityAgentModule(): AgentModule {
  let rootLogger: Logger | undefined;
  let logger: Logger | undefined;
  return {
    name: "observability",
    configSections: ["observability"],
    start(ctx) {
      rootLogger = ctx.rootLogger;
      logger = ctx.logger;
    },
    applyConfiguration(config) {
      if (!rootLogger) return;
      const level = pinoLevels[config.observability?.logging?.level ?? log_level_enum.info] ?? "info";
      if (rootLogger.level === level) return;
      rootLogger.level = level;
      logger?.info({ logLevel: level }, "set the log level");
    },
  };
}
