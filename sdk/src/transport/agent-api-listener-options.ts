import type * as http from "node:http";
import type * as http2 from "node:http2";
import type * as tls from "node:tls";
import { resolveListenerLimits, type ListenerLimits } from "./listener-limits.js";
import { DEFAULT_WEBSOCKET_MAX_MESSAGE_BYTES } from "./websocket-tunnel.js";

/**
 * A Node request handler for both HTTP versions, such as the one returned by
 * connect-node's `connectNodeAdapter()` (gRPC, gRPC-Web and Connect).
 */
export type AgentApiRequestHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

/**
 * Takes an HTTP/2 stream as it arrives, before Node's compatibility layer builds an
 * `Http2ServerRequest`/`Http2ServerResponse` pair for it. Returns true when it has taken the
 * stream; false hands the stream to the request handler.
 */
export type AgentApiStreamHandler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => boolean;

/** Structured logger; pino's Logger satisfies it. */
export interface TransportLogger {
  debug(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** Server certificate for the agent API; ALPN is set by the listener. */
export interface AgentApiTlsOptions extends Omit<tls.TlsOptions, "ALPNProtocols" | "ALPNCallback" | "handshakeTimeout"> {
  /** PEM certificate chain. */
  cert: string | Buffer | Array<string | Buffer>;
  /** PEM private key. */
  key: string | Buffer | Array<string | Buffer>;
}

/** The agent API's defaults of the limits every listener has ({@link ListenerLimits}). */
export const AGENT_API_LIMITS = {
  maxConnections: 10_000,
  // agentk keeps up to 500 tunnel streams open on one connection, plus its other calls.
  maxConcurrentStreams: 1_000,
  headersTimeoutMs: 20_000,
  idleTimeoutMs: 600_000,
} as const;

/**
 * Options for {@link createAgentApiListener}. The limits ({@link ListenerLimits}) default to
 * {@link AGENT_API_LIMITS}: at most 10 000 connections, 1 000 concurrent streams per connection,
 * 20 000 ms to open the first stream (HTTP/1.1: to send a request head), and a connection with no
 * open stream (HTTP/1.1: an idle keep-alive one) closed after 600 000 ms (10 min).
 */
export interface AgentApiListenerOptions extends ListenerLimits {
  /** Serves every request on the port, over HTTP/2 and HTTP/1.1. */
  handler: AgentApiRequestHandler;
  /**
   * Sees every HTTP/2 stream first and may serve it on the raw stream. Node's compatibility
   * objects and their listeners cost about 2.5 KiB of heap per stream for as long as the stream is
   * open, which adds up for long-lived idle streams such as agent tunnels. Default: none, every
   * request goes to `handler`.
   */
  streamHandler?: AgentApiStreamHandler;
  /**
   * Address to bind. Default "127.0.0.1" (GitLab KAS's default); use
   * "0.0.0.0" or "::" to accept agents from other hosts.
   */
  host?: string;
  /** TCP port; 0 picks a free port (see `address`). Default 8150. */
  port?: number;
  /**
   * Serve TLS. ALPN "h2" then means gRPC over HTTP/2, "http/1.1" (or no
   * ALPN) means HTTP/1.1: WebSocket tunnels, Connect and gRPC-Web.
   * Default: cleartext, told apart by the HTTP/2 connection preface.
   */
  tls?: AgentApiTlsOptions;
  /**
   * Largest request header block accepted, in bytes: HTTP/2
   * SETTINGS_MAX_HEADER_LIST_SIZE and the HTTP/1.1 header limit. A bigger one
   * fails that request (HTTP/2 stream reset, HTTP/1.1 431). Default 65 536.
   */
  maxHeaderListSizeBytes?: number;
  /**
   * Further HTTP/2 SETTINGS to advertise (window sizes). Default: Node's; the stream limit is
   * `maxConcurrentStreams`.
   */
  http2Settings?: http2.Settings;
  /**
   * Memory an HTTP/2 session may use for buffered frames and headers, in MiB,
   * before it refuses new streams. Default 10 (Node's default).
   */
  http2MaxSessionMemoryMiB?: number;
  /**
   * Ping each HTTP/2 session this often, in ms, to notice agents that vanished
   * without closing their connection. 0 disables. Default 50 000 (GitLab
   * KAS's server keepalive time; agentk accepts server pings at any rate).
   */
  keepalivePingIntervalMs?: number;
  /** Destroy a session whose PING is unanswered for this long, in ms. Default 20 000. */
  keepalivePingTimeoutMs?: number;
  /**
   * Send GOAWAY to HTTP/2 sessions older than this, in ms (±10 % jitter), so
   * agents reconnect and spread across KAS replicas. 0 disables (default).
   * GitLab KAS uses 2 h (`agent.listen.max_connection_age`).
   */
  maxConnectionAgeMs?: number;
  /** Time in-flight streams get after an age GOAWAY before the session is destroyed, in ms. Default 600 000. */
  maxConnectionAgeGraceMs?: number;
  /**
   * Time a new connection has to reveal its protocol, in ms: its first bytes
   * (cleartext) or its TLS handshake. A silent connection is closed after it.
   * Default 10 000.
   */
  protocolDetectionTimeoutMs?: number;
  /** Largest WebSocket message on a ws-tunnel, in bytes. Default 10 MiB (GitLab KAS's limit). */
  webSocketMaxMessageBytes?: number;
  /** Receives a debug line for each refused or broken connection. Default: silent. */
  logger?: TransportLogger;
}

/** The options with their defaults applied. */
export type ResolvedAgentApiListenerOptions = Required<Omit<AgentApiListenerOptions, "tls" | "logger" | "http2Settings" | "streamHandler">> &
  Pick<AgentApiListenerOptions, "tls" | "logger" | "http2Settings" | "streamHandler">;

export function resolveAgentApiListenerOptions(options: AgentApiListenerOptions): ResolvedAgentApiListenerOptions {
  return {
    handler: options.handler,
    streamHandler: options.streamHandler,
    host: options.host ?? "127.0.0.1",
    port: options.port ?? 8150,
    tls: options.tls,
    maxHeaderListSizeBytes: options.maxHeaderListSizeBytes ?? 65_536,
    http2Settings: options.http2Settings,
    http2MaxSessionMemoryMiB: options.http2MaxSessionMemoryMiB ?? 10,
    ...resolveListenerLimits(options, AGENT_API_LIMITS),
    keepalivePingIntervalMs: options.keepalivePingIntervalMs ?? 50_000,
    keepalivePingTimeoutMs: options.keepalivePingTimeoutMs ?? 20_000,
    maxConnectionAgeMs: options.maxConnectionAgeMs ?? 0,
    maxConnectionAgeGraceMs: options.maxConnectionAgeGraceMs ?? 600_000,
    protocolDetectionTimeoutMs: options.protocolDetectionTimeoutMs ?? 10_000,
    webSocketMaxMessageBytes: options.webSocketMaxMessageBytes ?? DEFAULT_WEBSOCKET_MAX_MESSAGE_BYTES,
    logger: options.logger,
  };
}
