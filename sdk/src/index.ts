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
export type { GatewayListenOptions } from "./server/gateway-listener.js";
export { createObservabilityServer } from "./server/observability-server.js";
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
export { AgentConfigurationSource } from "./agent/agent-configuration-source.js";
export type { AppliedAgentConfiguration, AgentConfigurationListener } from "./agent/agent-configuration-source.js";
export { apiUnaryMethod } from "./server/api-unary-method.js";
export type { ApiUnaryMethod, ApiUnaryMethodOptions } from "./server/api-unary-method.js";

// Git push notifications (platform -> KAS) and the modules that react to pushes
export { notificationsModule } from "./modules/notifications/server/notifications-module.js";
export type { NotificationsModuleOptions } from "./modules/notifications/server/notifications-module.js";
export { InMemoryGitPushEvents } from "./modules/notifications/server/git-push-events.js";
export type { GitPushEvents, GitPushEventInfo, GitPushListener } from "./modules/notifications/server/git-push-events.js";
export { RedisGitPushEvents, KAS_EVENTS_CHANNEL } from "./modules/notifications/server/redis-git-push-events.js";
export type { RedisGitPushEventsOptions, RedisPublisher, RedisSubscriber } from "./modules/notifications/server/redis-git-push-events.js";
export { fluxModule } from "./modules/flux/server/flux-module.js";
export type { FluxModuleOptions } from "./modules/flux/server/flux-module.js";
export { agentFluxModule } from "./modules/flux/agent/flux-module.js";
export type { AgentFluxOptions } from "./modules/flux/agent/flux-module.js";
export { gitopsModule, MANIFEST_CHUNK_BYTES } from "./modules/gitops/server/gitops-module.js";
export type { GitopsModuleOptions } from "./modules/gitops/server/gitops-module.js";
export { agentGitopsModule } from "./modules/gitops/agent/gitops-module.js";
export type { AgentGitopsOptions } from "./modules/gitops/agent/gitops-module.js";
export { decodeManifests, ManifestError, ManifestsInvalidError } from "./modules/gitops/agent/manifest-decoder.js";
export { KubeHttp, KubeApiError } from "./agent/kube/kube-http.js";
export { GitopsStatusService } from "./gen/kasbridge/gitops/v1/sync_status_pb.js";

// Kubernetes API proxy: KAS side (port 8154) and agent side (KubernetesApi/MakeRequest)
export * from "./kubeproxy/index.js";
export type {
  JobAllowedAgents,
  ProxyUserAuthorizationAnswer,
  ProxyUserAccessAsAnswer,
  AuthorizeProxyUserRequest,
  ProjectInfo,
} from "./platform/platform-client.js";

// Transports
export * from "./transport/index.js";

// Tokens, JWTs, secrets
export * from "./auth/index.js";

// Platform ("Rails bridge"): contract, store, services, REST and internal APIs, clients
export * from "./platform/index.js";

// Utilities worth sharing
export { Backoff, sleep } from "./util/backoff.js";
export { hostPort } from "./util/host-port.js";
export type { BackoffOptions } from "./util/backoff.js";

// Protocol
export { EchoService } from "./gen/kasbridge/echo/v1/echo_pb.js";
export { ReverseTunnel } from "./gen/gitlab/agent/reverse_tunnel/rpc/rpc_pb.js";
export { AgentRegistrar } from "./gen/gitlab/agent/agent_registrar/rpc/rpc_pb.js";
export { AgentConfiguration } from "./gen/gitlab/agent/agent_configuration/rpc/rpc_pb.js";
export { KubernetesApi } from "./gen/gitlab/agent/kubernetes_api/rpc/rpc_pb.js";
