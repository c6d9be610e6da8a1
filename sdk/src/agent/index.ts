// @kasbridge/sdk/agent: the agent assembly, the module interface its features implement, and the
// tunnel pool it serves them through.

export { createAgent } from "./create-agent.js";
export type { Agent, AgentOptions } from "./create-agent.js";
export type { AgentModule, AgentModuleContext, ServedService } from "./agent-module.js";
export { AgentHealth } from "./agent-health.js";
export type { AgentHealthOptions, AgentHealthSnapshot } from "./agent-health.js";
export { defaultAgentModules } from "./default-modules.js";
export { randomPodId } from "./pod-id.js";
export { createLeadership } from "./leadership.js";
export type { LeaderElectionOptions, Leadership, LeadershipController, LeaderWork } from "./leadership.js";
export { LeaseLock, microTime } from "./lease-lock.js";
export type { LeaseAttempt, LeaseLockOptions } from "./lease-lock.js";
export { apiErrorMessage, apiStatus, callOptions } from "./kube-calls.js";
export { DEFAULT_MAX_MESSAGE_BYTES } from "../grpc/limits.js";

// The tunnel pool and the in-process server behind it
export { LocalServiceHost } from "../tunnel/agent/local-service-host.js";
export type { LocalServiceHostOptions } from "../tunnel/agent/local-service-host.js";
export { TunnelPool } from "../tunnel/agent/tunnel-pool.js";
export type { TunnelPoolOptions } from "../tunnel/agent/tunnel-pool.js";
export { connectTunnelStreams, rawTunnelStreams } from "../tunnel/agent/tunnel-stream.js";
export type { TunnelStream, TunnelStreamOpener } from "../tunnel/agent/tunnel-stream.js";

// What feature modules build on: the configuration as it changes, and the cluster (Flux, GitOps)
export { AgentConfigurationSource, configuredAgentModule } from "./agent-configuration-source.js";
export type { AppliedAgentConfiguration, AgentConfigurationListener } from "./agent-configuration-source.js";
export { KubeHttp, KubeApiError, isNotFound, isConflict } from "./kube/kube-http.js";
export type { KubeRequest, WatchEvent } from "./kube/kube-http.js";
