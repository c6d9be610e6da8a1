import * as http2 from "node:http2";
import { Code, ConnectError, type Interceptor, type Transport } from "@connectrpc/connect";
import type { Compression } from "@connectrpc/connect/protocol";
import { Http2SessionManager, compressionGzip, createGrpcTransport } from "@connectrpc/connect-node";
import { createAgentConnectionFactory, parseAgentApiAddress } from "./agent-connection.js";
import { AgentSessionManager } from "./agent-session-manager.js";
import { markConnectionError, unavailableOnConnectionError } from "./connection-error.js";
import { DEFAULT_WEBSOCKET_MAX_MESSAGE_BYTES } from "./websocket-tunnel.js";
import { GrpcClientStream } from "./grpc-client-stream.js";

/** Options for {@link createAgentTransport}. */
export interface AgentTransportOptions {
  /**
   * The KAS agent API (agentk's `--kas-address`): `grpc://` cleartext HTTP/2,
   * `grpcs://` TLS, `ws://`/`wss://` HTTP/2 inside a `ws-tunnel` WebSocket
   * (the path is used for the WebSocket request). Default ports 80 / 443.
   */
  url: string;
  /**
   * Extra headers (agentk's `--kas-header`): sent as metadata on every call
   * (a call's own header of the same name wins) and, for ws/wss, also on the
   * WebSocket handshake. Default none.
   */
  headers?: Record<string, string>;
  /**
   * Headers set on every call, over a call's own and the extra headers, but not sent on the
   * WebSocket handshake (e.g. the agent token's `authorization`). Default none.
   */
  callHeaders?: Record<string, string>;
  /**
   * User-Agent for calls and the WebSocket handshake. agentk sends
   * `gitlab-agent/<version>/<commit>`, see {@link agentUserAgent}.
   * Default `gitlab-agent/unknown/unknown`.
   */
  userAgent?: string;
  /** Trusted CA certificates (PEM) for grpcs/wss. Default: Node's bundled roots. */
  ca?: string | Buffer | Array<string | Buffer>;
  /** Verify KAS's certificate (agentk's `--kas-insecure-skip-tls-verify` inverted). Default true. */
  rejectUnauthorized?: boolean;
  /** TLS server name to send and verify (agentk's `--kas-tls-server-name`). Default: the URL's host. */
  tlsServerName?: string;
  /** Send an HTTP/2 PING this often, in ms, with or without open streams. Default 55 000 (agentk). */
  pingIntervalMs?: number;
  /** Declare the connection dead when a PING is unanswered this long, in ms. Default 20 000. */
  pingTimeoutMs?: number;
  /** Close the connection after this long without any call, in ms. Default 900 000 (15 min). */
  idleConnectionTimeoutMs?: number;
  /**
   * Time allowed to connect, in ms, for each of: the TCP, TLS and WebSocket
   * handshakes, and KAS acknowledging our HTTP/2 SETTINGS. Default 20 000
   * (agentk's gRPC minimum connect timeout).
   */
  connectTimeoutMs?: number;
  /**
   * Compression for request messages; null sends them uncompressed. Default
   * gzip, as agentk. Responses are accepted gzip-compressed.
   */
  sendCompression?: Compression | null;
  /** Messages smaller than this many bytes are sent uncompressed. Default 1 024 (connect-es). */
  compressMinBytes?: number;
  /** Interceptors run for every call, outermost first, before ours add headers. Default none. */
  interceptors?: Interceptor[];
  /** Largest response message accepted, in bytes. Default ~4 GiB (connect-es). */
  readMaxBytes?: number;
  /** Largest request message sent, in bytes. Default ~4 GiB (connect-es). */
  writeMaxBytes?: number;
  /** Deadline applied to every call without its own timeoutMs, in ms. Default none. */
  defaultTimeoutMs?: number;
  /** Largest WebSocket message accepted on a ws-tunnel, in bytes. Default 10 MiB. */
  webSocketMaxMessageBytes?: number;
  /** HTTP/2 SETTINGS sent to KAS (window sizes, maxHeaderListSize). Default Node's. */
  http2Settings?: http2.Settings;
}

/** A gRPC transport to KAS for the agent side. */
export interface AgentTransport {
  /** Use with connect's createClient(); calls share one HTTP/2 connection. */
  readonly transport: Transport;
  /** "closed" | "connecting" | "open" | "idle" | "verifying" | "error", see Http2SessionManager. */
  state(): ReturnType<Http2SessionManager["state"]>;
  /**
   * Opens a gRPC call as a raw HTTP/2 stream on the same connection, without a connect-es client:
   * the same request headers as a connect call (extra and call headers, user agent, compression,
   * deadline) and message limits. Undefined when the transport has user interceptors (they could not
   * run) or a send compression other than gzip.
   */
  readonly grpcStream?: <I, O>(
    path: string,
    codec: { encode(message: I): Uint8Array; decode(bytes: Uint8Array): O },
  ) => GrpcClientStream<I, O>;
  /** Closes the connection; in-flight and later calls fail with Canceled. Idempotent. */
  close(): void;
}

/** agentk's User-Agent: `gitlab-agent/<version>/<commit>`. */
export function agentUserAgent(version: string, commit: string): string {
  return `gitlab-agent/${version}/${commit}`;
}

/**
 * Creates the agent's gRPC transport to KAS, compatible with GitLab's agentk:
 * one HTTP/2 connection (directly or inside a WebSocket), kept alive with
 * PINGs, gzip-compressed requests, extra headers on every call. A lost
 * connection fails in-flight calls with Unavailable; the next call reconnects.
 */
export function createAgentTransport(options: AgentTransportOptions): AgentTransport {
  const address = parseAgentApiAddress(options.url);
  const headers = Object.entries(options.headers ?? {});
  const userAgent = options.userAgent ?? agentUserAgent("unknown", "unknown");

  const connectTimeoutMs = options.connectTimeoutMs ?? 20_000;
  const createConnection = createAgentConnectionFactory(address, {
    webSocketHeaders: { ...options.headers, "User-Agent": userAgent },
    ca: options.ca,
    rejectUnauthorized: options.rejectUnauthorized ?? true,
    tlsServerName: options.tlsServerName,
    connectTimeoutMs,
    webSocketMaxMessageBytes: options.webSocketMaxMessageBytes ?? DEFAULT_WEBSOCKET_MAX_MESSAGE_BYTES,
    onConnectionError: markConnectionError,
  });
  const http2SessionManager = new Http2SessionManager(
    address.origin,
    {
      pingIntervalMs: options.pingIntervalMs ?? 55_000,
      pingTimeoutMs: options.pingTimeoutMs ?? 20_000,
      // agentk pings without open streams too; proxies drop silent connections.
      pingIdleConnection: true,
      idleConnectionTimeoutMs: options.idleConnectionTimeoutMs ?? 15 * 60_000,
    },
    { createConnection, settings: options.http2Settings },
  );
  const sessionManager = new AgentSessionManager(http2SessionManager, connectTimeoutMs);

  let closed = false;
  const refuseWhenClosed: Interceptor = (next) => (req) => {
    if (closed) throw new ConnectError("agent transport is closed", Code.Canceled);
    return next(req);
  };
  const callHeaders = Object.entries(options.callHeaders ?? {});
  const setCallHeaders: Interceptor = (next) => (req) => {
    for (const [name, value] of callHeaders) req.header.set(name, value);
    return next(req);
  };
  const addHeaders: Interceptor = (next) => (req) => {
    for (const [name, value] of headers) {
      if (!req.header.has(name)) req.header.set(name, value);
    }
    req.header.set("User-Agent", userAgent);
    return next(req);
  };

  const transport = createGrpcTransport({
    baseUrl: address.origin,
    sessionManager,
    interceptors: [unavailableOnConnectionError, refuseWhenClosed, setCallHeaders, ...(options.interceptors ?? []), addHeaders],
    sendCompression: options.sendCompression === undefined ? compressionGzip : options.sendCompression ?? undefined,
    acceptCompression: [compressionGzip],
    compressMinBytes: options.compressMinBytes,
    readMaxBytes: options.readMaxBytes,
    writeMaxBytes: options.writeMaxBytes,
    defaultTimeoutMs: options.defaultTimeoutMs,
  });

  const sendCompression = options.sendCompression === undefined ? compressionGzip : options.sendCompression;
  const rawCapable = (options.interceptors ?? []).length === 0 && (sendCompression === null || sendCompression.name === "gzip");
  const gzipMinBytes = sendCompression === null ? undefined : options.compressMinBytes ?? 1024;
  const timeoutMs = options.defaultTimeoutMs;
  // Built once: the session manager copies them into each request's own object.
  const rawHeaders: http2.OutgoingHttpHeaders = {};
  for (const [name, value] of [...headers, ...callHeaders]) rawHeaders[name.toLowerCase()] = value;
  Object.assign(rawHeaders, GrpcClientStream.requestHeaders({ gzipMinBytes, timeoutMs }), { "user-agent": userAgent });
  const grpcStream = <I, O>(
    path: string,
    codec: { encode(message: I): Uint8Array; decode(bytes: Uint8Array): O },
  ): GrpcClientStream<I, O> => {
    const open = closed
      ? Promise.reject(new ConnectError("agent transport is closed", Code.Canceled))
      : sessionManager.request("POST", path, rawHeaders, {}).then((stream) => {
          // close() ran while the stream was being opened.
          if (!closed) return stream;
          stream.close(http2.constants.NGHTTP2_CANCEL);
          throw new ConnectError("agent transport is closed", Code.Canceled);
        });
    return new GrpcClientStream(open, {
      ...codec,
      readMaxBytes: options.readMaxBytes ?? 0xffffffff,
      writeMaxBytes: options.writeMaxBytes ?? 0xffffffff,
      gzipMinBytes,
      timeoutMs,
      onRead: (stream) => sessionManager.notifyResponseByteRead(stream),
    });
  };

  return {
    transport,
    grpcStream: rawCapable ? grpcStream : undefined,
    state: () => sessionManager.state(),
    close() {
      if (closed) return;
      closed = true;
      // Canceled leaves the manager "closed" rather than "error".
      sessionManager.abort(new ConnectError("agent transport is closed", Code.Canceled));
    },
  };
}
