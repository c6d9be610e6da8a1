// @kasbridge/sdk: the public API. Server and agent assemblies, their building blocks, the platform
// side, and the generated protocol types (also importable as "@kasbridge/sdk/gen/...").

// Assemblies
export { createKasServer } from "./server/kas-server.js";
export type { KasServer, KasServerOptions, KasModule, KasModuleContext } from "./server/kas-server.js";
export { createAgent } from "./agent/create-agent.js";
export type { Agent, AgentOptions, AgentModule, AgentModuleContext } from "./agent/create-agent.js";

// KAS building blocks
export { AgentAuthenticator } from "./server/agent-authenticator.js";
export type { AgentAuthenticatorOptions } from "./server/agent-authenticator.js";
export { AgentTracker, defaultKasInstanceId } from "./server/agent-tracker.js";
export { createTunnelGateway, routingAgentIdHeader, parseGrpcTimeout } from "./server/tunnel-gateway.js";
export type { TunnelGatewayOptions } from "./server/tunnel-gateway.js";
export { rawServerStreamingMethod, rawGrpcMethods, RawServerStreamCall, handlerError, kasShuttingDownError } from "./server/raw-grpc.js";
export type { RawGrpcMethod, RawServerStreamHandler, RawServerStreamOptions, RawStreamHandler } from "./server/raw-grpc.js";
export {
  internalApiAuthorizer,
  internalApiClientInterceptor,
  privateApiAuthorizer,
  privateApiClientInterceptor,
  PLATFORM_JWT_ISSUER,
} from "./server/internal-api-auth.js";
export { GATEWAY_LIMITS } from "./server/gateway-listener.js";
export type { GatewayListenOptions } from "./server/gateway-listener.js";
export { authenticateBeforeBody } from "./server/agent-auth-gate.js";
export { createObservabilityServer, OBSERVABILITY_LIMITS } from "./server/observability-server.js";
export type { ObservabilityServerOptions } from "./server/observability-server.js";
export { InMemoryTunnelRegistry } from "./tunnel/server/tunnel-registry.js";
export type { TunnelRegistry } from "./tunnel/server/tunnel-registry.js";
export { ServerTunnel } from "./tunnel/server/server-tunnel.js";
export type { TunnelCall, TunnelCallEvent } from "./tunnel/server/server-tunnel.js";

// Agent building blocks
export { LocalServiceHost } from "./tunnel/agent/local-service-host.js";
export type { LocalServiceHostOptions } from "./tunnel/agent/local-service-host.js";
export { TunnelPool } from "./tunnel/agent/tunnel-pool.js";
export type { TunnelPoolOptions } from "./tunnel/agent/tunnel-pool.js";
export { connectTunnelStreams, rawTunnelStreams } from "./tunnel/agent/tunnel-stream.js";
export type { TunnelStream, TunnelStreamOpener } from "./tunnel/agent/tunnel-stream.js";
export { AgentRegistration, randomPodId } from "./agent/agent-registration.js";
export { echoService } from "./modules/echo/echo-service.js";

// Feature modules
export { agentConfigurationModule } from "./modules/configuration/server.js";
export type { AgentConfigurationModuleOptions } from "./modules/configuration/server.js";
export { agentConfigurationWatcher } from "./modules/configuration/agent.js";
export type { AgentConfigurationWatcherOptions } from "./modules/configuration/agent.js";
export { toAgentConfiguration, noConfigCommitId } from "./modules/configuration/to-agent-configuration.js";

// Kubernetes API proxy: KAS side (port 8154) and agent side (KubernetesApi/MakeRequest)
export * from "./kubeproxy/index.js";
export type {
  JobAllowedAgents,
  ProxyUserAuthorizationAnswer,
  ProxyUserAccessAsAnswer,
  AuthorizeProxyUserRequest,
} from "./platform/platform-client.js";

// Transports
export * from "./transport/index.js";

// Tokens, JWTs, secrets
export * from "./auth/index.js";

// Platform ("Rails bridge"): contract, store, services, REST and internal APIs, clients
export * from "./platform/index.js";

// Utilities worth sharing
export { Backoff, sleep } from "./util/backoff.js";
export { hostPort, parseListenAddress } from "./util/host-port.js";
export { installProcessSafetyNet } from "./util/process-safety-net.js";
export type { ProcessSafetyNetOptions, SafetyNetLogger, UncaughtKind } from "./util/process-safety-net.js";
export type { BackoffOptions } from "./util/backoff.js";

// Protocol
export { EchoService } from "./gen/kasbridge/echo/v1/echo_pb.js";
export { ReverseTunnel } from "./gen/gitlab/agent/reverse_tunnel/rpc/rpc_pb.js";
export { AgentRegistrar } from "./gen/gitlab/agent/agent_registrar/rpc/rpc_pb.js";
export { AgentConfiguration } from "./gen/gitlab/agent/agent_configuration/rpc/rpc_pb.js";
export { KubernetesApi } from "./gen/gitlab/agent/kubernetes_api/rpc/rpc_pb.js";
