// @kasbridge/sdk/agent-config: the agent configuration file (.gitlab/agents/<name>/config.yaml):
// parser and validator, shared by KAS embedders and platforms.

export {
  AGENT_CONFIG_MAX_BYTES,
  AgentConfigError,
  checkAgentConfigFile,
  formatAgentConfigProblem,
  parseAgentConfigFile,
} from "./config-file.js";
export type { AgentConfigParseResult, AgentConfigProblem } from "./config-file.js";
