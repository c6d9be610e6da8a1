// @kasbridge/sdk/transport. Agent API transport: the KAS-side listener (gRPC over HTTP/2, h2c, TLS and
// ws-tunnel WebSockets, plus Connect/gRPC-Web over HTTP/1.1 on one port) and
// the agent-side gRPC transport that reaches it.
export { createAgentApiListener } from "./agent-api-listener.js";
export { AGENT_API_LIMITS } from "./agent-api-listener-options.js";
export { applyHttp1Limits, resolveListenerLimits } from "./listener-limits.js";
export type { ListenerLimits, ResolvedListenerLimits } from "./listener-limits.js";
export { PLACEHOLDER_AUTHORITY } from "./request-guard.js";
export type {
  AgentApiListener,
  AgentApiSessionInfo,
  AgentApiSessionListener,
  AgentApiSessionTransport,
  AgentApiUrlScheme,
} from "./agent-api-listener.js";
export type {
  AgentApiListenerOptions,
  AgentApiRequestHandler,
  AgentApiStreamHandler,
  AgentApiTlsOptions,
  TransportLogger,
} from "./agent-api-listener-options.js";
export { agentUserAgent, createAgentTransport } from "./agent-transport.js";
export type { AgentTransport, AgentTransportOptions } from "./agent-transport.js";
export { GrpcClientStream } from "./grpc-client-stream.js";
export type { GrpcClientStreamOptions } from "./grpc-client-stream.js";
export { parseAgentApiAddress } from "./agent-connection.js";
export type { AgentApiAddress } from "./agent-connection.js";
export { WS_TUNNEL_SUBPROTOCOL } from "./websocket-tunnel.js";
