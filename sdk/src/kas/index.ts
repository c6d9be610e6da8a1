// @kasbridge/sdk/kas: the KAS assembly, the module interface its features implement, and the
// building blocks of both (agent authentication, tunnels, the internal and private API gateways).

export { createKasServer } from "./kas-server.js";
export type { KasServer, KasServerOptions } from "./kas-server.js";
export type { KasModule, KasModuleContext } from "./kas-module.js";
export { KasAuditLog } from "./audit-log.js";
export type { KasAuditLogOptions } from "./audit-log.js";
export { UsageMetrics } from "./usage-metrics.js";
export type { UsageMetricsPayload } from "./usage-metrics.js";
export { defaultKasModules } from "./default-modules.js";
export { DEFAULT_MAX_MESSAGE_BYTES } from "../grpc/limits.js";

// Agents: authentication and connected processes
export { AgentAuthenticator, platformErrorToConnectError, tokenRevokedError } from "./agent-authenticator.js";
export type { AgentAuthenticatorOptions } from "./agent-authenticator.js";
export { AgentTracker, defaultKasInstanceId } from "./agent-tracker.js";
export { agentTokenKey, connectionRateLimitError, DEFAULT_CONNECTIONS_PER_TOKEN_PER_MINUTE, InMemoryConnectionLimiter } from "./connection-limiter.js";
export type { AgentConnectionLimiter } from "./connection-limiter.js";
export type { AgentConnectionObserver, AgentTrackerOptions } from "./agent-tracker.js";

// Calls to agents through their tunnels
export { localAgentCalls } from "../tunnel/server/agent-calls.js";
export type { AgentCalls } from "../tunnel/server/agent-calls.js";
export { InMemoryTunnelRegistry } from "../tunnel/server/tunnel-registry.js";
export type { TunnelRegistry } from "../tunnel/server/tunnel-registry.js";
export { ServerTunnel } from "../tunnel/server/server-tunnel.js";
export type { TunnelCall, TunnelCallEvent } from "../tunnel/server/server-tunnel.js";
export { agentConnectionNotFoundError, createTunnelGateway, routingAgentIdHeader, TUNNEL_FIND_TIMEOUT_MS } from "../tunnel/server/tunnel-gateway.js";
export { createPrivateApiGateway } from "../tunnel/server/private-api-gateway.js";
export type { PrivateApiGatewayOptions } from "../tunnel/server/private-api-gateway.js";
export type { TunnelGatewayOptions } from "../tunnel/server/tunnel-gateway.js";
export { GATEWAY_LIMITS } from "../tunnel/server/gateway-listener.js";
export type { GatewayListenOptions } from "../tunnel/server/gateway-listener.js";
export { authenticateBeforeBody } from "./agent-auth-gate.js";
export {
  internalApiAuthorizer,
  internalApiClientInterceptor,
  privateApiAuthorizer,
  privateApiClientInterceptor,
  PLATFORM_JWT_ISSUER,
} from "./internal-api-auth.js";

// Agent-facing methods on raw HTTP/2 streams (long-lived, mostly idle calls every agent holds)
export { rawGrpcMethods } from "../grpc/raw-dispatch.js";
export type { RawGrpcMethod, RawStreamHandler } from "../grpc/raw-dispatch.js";
export { rawServerStreamingMethod, RawServerStreamCall } from "./raw-server-stream.js";
export type { RawServerStreamHandler, RawServerStreamOptions } from "./raw-server-stream.js";
export { handlerError, kasShuttingDownError } from "../grpc/status-errors.js";
export { parseGrpcTimeout } from "../grpc/grpc-timeout.js";

// Unary methods a module serves on the internal API (8153) for the platform
export { apiUnaryMethod } from "../grpc/api-unary-method.js";
export type { ApiUnaryMethod, ApiUnaryMethodOptions } from "../grpc/api-unary-method.js";
export { openAgentCall } from "./agent-call.js";
export type { AgentCall } from "./agent-call.js";
