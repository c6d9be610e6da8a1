// @kasbridge/sdk/modules/agent_tracker/server: AgentTracker/GetConnectedAgents on KAS's internal API.
export { agentTrackerServerModule } from "./agent-tracker-server-module.js";
