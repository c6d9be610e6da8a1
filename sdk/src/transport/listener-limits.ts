import type * as http from "node:http";
import type * as http2 from "node:http2";
import { superviseSession } from "./session-supervisor.js";

/**
 * How many connections a listener serves and how long it waits for them: what keeps a client that
 * has no credential from holding sockets, streams or memory. Every KAS listener has defaults.
 */
export interface ListenerLimits {
  /** Most TCP connections served at once; further ones are closed when accepted. */
  maxConnections?: number;
  /** Most streams one HTTP/2 connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS); further ones are refused. */
  maxConcurrentStreams?: number;
  /**
   * Time a new connection has to send a complete request head, in ms: HTTP/2, to open its first
   * stream; HTTP/1.1, the head of each request (Node's `headersTimeout`). Then it is closed.
   */
  headersTimeoutMs?: number;
  /**
   * Close a connection that has had no request in progress for this long, in ms: HTTP/2, no open
   * stream (GOAWAY; PINGs do not count, as with grpc-go's MaxConnectionIdle); HTTP/1.1, an idle
   * keep-alive connection. A stream that is open (a tunnel, a watch, an exec) is never idle,
   * however long it stays silent. 0 disables.
   */
  idleTimeoutMs?: number;
}

export type ResolvedListenerLimits = Required<ListenerLimits>;

/** `limits` with `defaults` for what it leaves unset. */
export function resolveListenerLimits(limits: ListenerLimits, defaults: ResolvedListenerLimits): ResolvedListenerLimits {
  return {
    maxConnections: limits.maxConnections ?? defaults.maxConnections,
    maxConcurrentStreams: limits.maxConcurrentStreams ?? defaults.maxConcurrentStreams,
    headersTimeoutMs: limits.headersTimeoutMs ?? defaults.headersTimeoutMs,
    idleTimeoutMs: limits.idleTimeoutMs ?? defaults.idleTimeoutMs,
  };
}

/**
 * Applies the limits that Node's HTTP/1.1 machinery enforces: the connection count, the request
 * head timeout and the keep-alive timeout. The time a whole request body may take stays Node's
 * (`requestTimeout`, 300 000 ms) unless `requestTimeoutMs` says otherwise (0: none, for uploads
 * that take as long as they take). For an HTTP/2 server with `allowHTTP1`, this covers its
 * HTTP/1.1 connections. Call it before the server listens.
 */
export function applyHttp1Limits(server: http.Server | http2.Http2SecureServer, limits: ResolvedListenerLimits, options: { requestTimeoutMs?: number } = {}): void {
  server.maxConnections = limits.maxConnections;
  // Http2SecureServer has these (for its HTTP/1.1 side) without declaring them.
  const timeouts = server as unknown as { headersTimeout: number; requestTimeout: number; keepAliveTimeout: number; connectionsCheckingInterval: number };
  timeouts.headersTimeout = limits.headersTimeoutMs;
  if (options.requestTimeoutMs !== undefined) timeouts.requestTimeout = options.requestTimeoutMs;
  timeouts.keepAliveTimeout = limits.idleTimeoutMs;
  // Node checks the head timeout on this interval (30 s by default), read when the server starts
  // listening: call this before.
  timeouts.connectionsCheckingInterval = Math.min(30_000, Math.max(100, Math.floor(limits.headersTimeoutMs / 4)));
}

/** HTTP/2 SETTINGS with the stream limit. */
export function http2SettingsWithLimits(settings: http2.Settings | undefined, limits: ResolvedListenerLimits): http2.Settings {
  return { maxConcurrentStreams: limits.maxConcurrentStreams, ...settings };
}

/** Liveness rules of a gateway or proxy session (the agent API's listener has its own options). */
export interface SessionLimitsOptions {
  /** Default 50 000 ms (GitLab KAS's server keepalive time). */
  keepalivePingIntervalMs?: number;
  /** Default 20 000 ms. */
  keepalivePingTimeoutMs?: number;
}

/**
 * Supervises an HTTP/2 session by `limits`: closed when it opens no stream within
 * `headersTimeoutMs` or has none open for `idleTimeoutMs`, pinged so a vanished peer is noticed.
 */
export function superviseSessionWithLimits(session: http2.ServerHttp2Session, limits: ResolvedListenerLimits, options: SessionLimitsOptions = {}): void {
  superviseSession(session, {
    keepalivePingIntervalMs: options.keepalivePingIntervalMs ?? 50_000,
    keepalivePingTimeoutMs: options.keepalivePingTimeoutMs ?? 20_000,
    firstStreamTimeoutMs: limits.headersTimeoutMs,
    idleTimeoutMs: limits.idleTimeoutMs,
    maxAgeMs: 0,
    maxAgeGraceMs: 0,
  });
}
