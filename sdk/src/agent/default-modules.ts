import { agentConfigurationAgentModule } from "../modules/agent_configuration/agent/configuration-watcher.js";
import { agentRegistrarAgentModule } from "../modules/agent_registrar/agent/agent-registrar-module.js";
import { echoAgentModule } from "../modules/echo/agent/echo-service.js";
import { observabilityAgentModule } from "../modules/observability/agent/observability-agent-module.js";
import type { AgentModule } from "./agent-module.js";

/**
 * The modules of an agent assembled without a list: registration, configuration (with the log
 * level applied by observability) and the echo diagnostics service. Add kubernetes_api (and the
 * like) to a list of your own: `[...defaultAgentModules(), await kubernetesApiAgentModule(...)]`.
 */
export function defaultAgentModules(): AgentModule[] {
  return [agentRegistrarAgentModule(), agentConfigurationAgentModule(), observabilityAgentModule(), echoAgentModule()];
}
