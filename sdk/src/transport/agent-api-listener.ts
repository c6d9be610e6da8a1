import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import type { Duplex } from "node:stream";
import * as tls from "node:tls";
import {
  type AgentApiListenerOptions,
  type ResolvedAgentApiListenerOptions,
  resolveAgentApiListenerOptions,
} from "./agent-api-listener-options.js";
import { answerAndHangUp } from "./hang-up.js";
import { applyHttp1Limits, http2SettingsWithLimits } from "./listener-limits.js";
import { sniffProtocol } from "./protocol-sniffer.js";
import { guardRequestHandler, guardStreamHandler } from "./request-guard.js";
import { superviseSession } from "./session-supervisor.js";
import { createWebSocketTunnelAcceptor } from "./websocket-tunnel.js";
import { hostPort } from "../util/host-port.js";
import { listen } from "../util/listen.js";

/**
 * How an HTTP/2 session reached the listener: "h2c" cleartext with prior
 * knowledge, "h2" TLS with ALPN, "ws"/"wss" tunnelled through a WebSocket.
 */
export type AgentApiSessionTransport = "h2c" | "h2" | "ws" | "wss";

/** What the listener knows about one HTTP/2 session (one agent connection). */
export interface AgentApiSessionInfo {
  /** Sequence number, unique within this listener; handy in logs. */
  readonly id: number;
  readonly transport: AgentApiSessionTransport;
  /** The TCP peer (for WebSocket tunnels: of the upgraded connection). */
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  readonly openedAt: Date;
  /**
   * For WebSocket tunnels, the handshake request: agentk sends its
   * `--kas-header` pairs only here, not as gRPC metadata.
   */
  readonly webSocketHandshake?: { readonly path: string; readonly headers: http.IncomingHttpHeaders };
}

export type AgentApiSessionListener = (session: http2.ServerHttp2Session, info: AgentApiSessionInfo) => void;

/** The URL schemes agentk understands, plus plain HTTP for Connect/gRPC-Web clients. */
export type AgentApiUrlScheme = "grpc" | "grpcs" | "ws" | "wss" | "http" | "https";

/** A bound agent API port. */
export interface AgentApiListener {
  /** The bound address (the real port when 0 was asked for). */
  readonly address: { readonly host: string; readonly port: number };
  /**
   * A URL that reaches this listener, e.g. `grpc://127.0.0.1:8150`. Default
   * scheme: "grpcs" with TLS, "grpc" without. A wildcard host becomes loopback.
   */
  url(scheme?: AgentApiUrlScheme, path?: string): string;
  /** Open HTTP/2 sessions, WebSocket-tunnelled ones included. */
  readonly sessions: ReadonlyMap<http2.ServerHttp2Session, AgentApiSessionInfo>;
  /**
   * Info for a session, e.g. `listener.sessionInfo(req.stream.session)` in a
   * handler (for WebSocket tunnels too: each tunnel is its own session).
   */
  sessionInfo(session: http2.Http2Session | undefined): AgentApiSessionInfo | undefined;
  /** Called for each new HTTP/2 session; returns an unsubscribe function. */
  onSessionOpen(listener: AgentApiSessionListener): () => void;
  /** Called when an HTTP/2 session has closed; returns an unsubscribe function. */
  onSessionClose(listener: AgentApiSessionListener): () => void;
  /**
   * Stops accepting connections, sends GOAWAY to HTTP/2 sessions and lets
   * in-flight calls finish for up to graceMs (default 10 000), then destroys
   * whatever is left. Resolves when every connection is gone. Idempotent.
   */
  close(graceMs?: number): Promise<void>;
}

type Meta = Omit<AgentApiSessionInfo, "id" | "openedAt">;

/**
 * Listens on one port for everything agentk (and Connect/gRPC-Web clients)
 * may send: gRPC over cleartext or TLS HTTP/2, HTTP/1.1, and HTTP/2 tunnelled
 * through `ws-tunnel` WebSockets.
 */
export async function createAgentApiListener(options: AgentApiListenerOptions): Promise<AgentApiListener> {
  const o = resolveAgentApiListenerOptions(options);
  const log = o.logger;
  const sessions = new Map<http2.ServerHttp2Session, AgentApiSessionInfo>();
  const openListeners = new Set<AgentApiSessionListener>();
  const closeListeners = new Set<AgentApiSessionListener>();
  const sockets = new Set<net.Socket>(); // every accepted TCP connection
  const undecided = new Map<string, net.Socket>(); // still sniffing or in TLS handshake, by peer address
  const http1Sockets = new Set<Duplex>();
  const http1Busy = new Map<Duplex, number>(); // in-flight HTTP/1.1 requests per socket
  let nextSessionId = 1;
  let pendingMeta: Meta | undefined;
  let closing = false;
  let closed: Promise<void> | undefined;
  let lastSessionClosed: (() => void) | undefined;

  const h2options: http2.ServerOptions = {
    settings: { ...http2SettingsWithLimits(o.http2Settings, o), maxHeaderListSize: o.maxHeaderListSizeBytes },
    maxSessionMemory: o.http2MaxSessionMemoryMiB,
    // Our own supervisor pings; Node's server has no timeout by default.
  };
  // Node builds the compatibility objects (Http2ServerRequest/Response) for every stream of a
  // server that has a "request" listener. With a stream handler, the sessions' server has none:
  // streams the stream handler declines are passed as "stream" events to a second server that
  // never listens itself and only runs the compatibility layer and the request handler.
  // No request may take the process down, whatever its :authority, path or headers.
  const handler = guardRequestHandler(o.handler, log, "agent API");
  const streamHandler = o.streamHandler && guardStreamHandler(o.streamHandler, log, "agent API");
  const h2server = streamHandler ? http2.createServer(h2options) : http2.createServer(h2options, handler);
  if (streamHandler) {
    const compat = http2.createServer(h2options, handler);
    h2server.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number, rawHeaders: string[]) => {
      if (!streamHandler(stream, headers)) compat.emit("stream", stream, headers, flags, rawHeaders);
    });
  }
  h2server.on("session", (session: http2.ServerHttp2Session) => {
    // "session" is emitted synchronously inside emit("connection"), so the
    // metadata set just before that call belongs to this session.
    const meta = pendingMeta ?? { transport: o.tls ? "h2" : "h2c", remoteAddress: undefined, remotePort: undefined };
    const info: AgentApiSessionInfo = { id: nextSessionId++, openedAt: new Date(), ...meta };
    sessions.set(session, info);
    superviseSession(session, {
      keepalivePingIntervalMs: o.keepalivePingIntervalMs,
      keepalivePingTimeoutMs: o.keepalivePingTimeoutMs,
      firstStreamTimeoutMs: o.headersTimeoutMs,
      idleTimeoutMs: o.idleTimeoutMs,
      maxAgeMs: o.maxConnectionAgeMs,
      maxAgeGraceMs: o.maxConnectionAgeGraceMs,
    });
    session.on("close", onSessionClose);
    if (closing) {
      session.close();
    }
    notify(openListeners, session, info);
  });
  // Shared by all sessions and sockets: no closure per connection.
  function onSessionClose(this: http2.ServerHttp2Session): void {
    const info = sessions.get(this);
    if (!info) return;
    sessions.delete(this);
    notify(closeListeners, this, info);
    if (sessions.size === 0) lastSessionClosed?.();
  }
  function onSocketClose(this: net.Socket): void {
    sockets.delete(this);
    // The peer address is cached on the socket from the "connection" handler on.
    undecided.delete(peerKey(this));
  }
  h2server.on("sessionError", (err: Error, session: http2.ServerHttp2Session) => {
    log?.debug({ err, session: sessions.get(session)?.id }, "agent API: HTTP/2 session error");
  });

  const h1server = http.createServer({ maxHeaderSize: o.maxHeaderListSizeBytes }, handler);
  applyHttp1Limits(h1server, o);
  // Node starts its HTTP/1.1 connection bookkeeping (headersTimeout,
  // closeIdleConnections) on "listening"; this server never listens itself,
  // it is only handed sockets.
  h1server.emit("listening");
  h1server.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    const socket = req.socket;
    http1Busy.set(socket, (http1Busy.get(socket) ?? 0) + 1);
    if (closing) res.shouldKeepAlive = false;
    res.once("close", () => {
      const n = (http1Busy.get(socket) ?? 1) - 1;
      if (n > 0) {
        http1Busy.set(socket, n);
        return;
      }
      http1Busy.delete(socket);
      if (closing) socket.end();
    });
  });
  h1server.on("upgrade", (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    http1Sockets.delete(socket);
    if (closing) {
      socket.destroy();
      return;
    }
    acceptor.handleUpgrade(req, socket, head);
  });
  h1server.on("clientError", (err: Error & { code?: string }, socket: Duplex) => {
    log?.debug({ err }, "agent API: bad HTTP/1.1 request");
    // Answer what Node would answer by default, then hang up.
    answerAndHangUp(socket, clientErrorStatus(err.code));
  });

  const acceptor = createWebSocketTunnelAcceptor({
    maxMessageBytes: o.webSocketMaxMessageBytes,
    onTunnel(stream, ws, req) {
      if (closing) {
        ws.terminate();
        return;
      }
      stream.on("error", (err) => log?.debug({ err }, "agent API: WebSocket tunnel error"));
      startHttp2(stream, {
        transport: o.tls ? "wss" : "ws",
        remoteAddress: req.socket.remoteAddress,
        remotePort: req.socket.remotePort,
        webSocketHandshake: { path: req.url ?? "/", headers: req.headers },
      });
    },
  });

  function startHttp2(stream: Duplex, meta: Meta): void {
    pendingMeta = meta;
    try {
      h2server.emit("connection", stream);
    } finally {
      pendingMeta = undefined;
    }
  }

  function startHttp1(socket: net.Socket): void {
    http1Sockets.add(socket);
    socket.once("close", () => http1Sockets.delete(socket));
    h1server.emit("connection", socket);
  }

  const server = o.tls
    ? tls.createServer({
        ...o.tls,
        ALPNProtocols: ["h2", "http/1.1"],
        handshakeTimeout: o.protocolDetectionTimeoutMs,
      })
    : net.createServer();
  server.maxConnections = o.maxConnections;

  server.on("connection", (socket: net.Socket) => {
    // The TLS server hands us the TLS socket later; the peer address, which
    // it proxies, links the two.
    const peer = peerKey(socket);
    sockets.add(socket);
    socket.on("close", onSocketClose);
    // Errors are handled by whoever owns the socket next; this only keeps a
    // reset in a hand-over gap from becoming an uncaught exception.
    socket.on("error", ignore);
    if (closing) {
      socket.destroy();
      return;
    }
    undecided.set(peer, socket);
    if (o.tls) return; // "secureConnection" takes over after the handshake
    void sniffProtocol(socket, o.protocolDetectionTimeoutMs).then((protocol) => {
      undecided.delete(peer);
      if (protocol === undefined || closing) {
        if (protocol === undefined) log?.debug({ remoteAddress: socket.remoteAddress }, "agent API: no protocol detected");
        socket.destroy();
        return;
      }
      const meta: Meta = { transport: "h2c", remoteAddress: socket.remoteAddress, remotePort: socket.remotePort };
      if (protocol === "h2") {
        startHttp2(socket, meta);
      } else {
        startHttp1(socket);
        // The HTTP/1.1 parser reads the unshifted bytes once data flows again.
        socket.resume();
      }
    });
  });

  if (o.tls) {
    const tlsServer = server as tls.Server;
    tlsServer.on("secureConnection", (socket: tls.TLSSocket) => {
      undecided.delete(peerKey(socket));
      socket.on("error", ignore);
      if (closing) {
        socket.destroy();
        return;
      }
      if (socket.alpnProtocol === "h2") {
        startHttp2(socket, { transport: "h2", remoteAddress: socket.remoteAddress, remotePort: socket.remotePort });
      } else {
        startHttp1(socket);
      }
    });
    tlsServer.on("tlsClientError", (err: Error, socket: tls.TLSSocket) => {
      log?.debug({ err, remoteAddress: socket.remoteAddress }, "agent API: TLS handshake failed");
      socket.destroy();
    });
  }

  const address = await listen(server, o.port, o.host);
  server.on("error", (err) => log?.warn({ err }, "agent API: server error"));

  function close(graceMs = 10_000): Promise<void> {
    closed ??= doClose(graceMs);
    return closed;
  }

  async function doClose(graceMs: number): Promise<void> {
    closing = true;
    // Resolves once every accepted connection has closed.
    const drained = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of undecided.values()) socket.destroy();
    // GOAWAY: agents stop opening streams here and reconnect elsewhere, while
    // in-flight calls may finish. Sessions end (and close their sockets and
    // WebSockets) when their last stream ends.
    for (const session of sessions.keys()) session.close();
    // Idle keep-alive HTTP/1.1 connections; busy ones end after their response.
    for (const socket of http1Sockets) {
      if (!http1Busy.has(socket)) socket.destroy();
    }
    // Also stops Node's HTTP/1.1 connection checking interval.
    h1server.close(() => {});
    const deadline = setTimeout(() => {
      for (const session of sessions.keys()) session.destroy();
      acceptor.terminateAll();
      for (const socket of sockets) socket.destroy();
    }, graceMs);
    await drained;
    // A tunnelled session may outlive its WebSocket's TCP socket by a tick.
    if (sessions.size > 0) await new Promise<void>((resolve) => (lastSessionClosed = resolve));
    clearTimeout(deadline);
    h2server.close();
  }

  return {
    address,
    url(scheme = o.tls ? "grpcs" : "grpc", path = "") {
      let host = address.host;
      if (host === "0.0.0.0") host = "127.0.0.1";
      if (host === "::") host = "::1";
      return `${scheme}://${hostPort(host, address.port)}${path}`;
    },
    sessions,
    sessionInfo: (session) => (session ? sessions.get(session as http2.ServerHttp2Session) : undefined),
    onSessionOpen: (listener) => subscribe(openListeners, listener),
    onSessionClose: (listener) => subscribe(closeListeners, listener),
    close,
  };

  function notify(listeners: Set<AgentApiSessionListener>, session: http2.ServerHttp2Session, info: AgentApiSessionInfo): void {
    for (const listener of listeners) {
      try {
        listener(session, info);
      } catch (err) {
        log?.warn({ err }, "agent API: session listener threw");
      }
    }
  }
}

/** The answer to an HTTP/1.1 request Node refused before it reached the handler. */
function clientErrorStatus(code: string | undefined): string {
  if (code === "HPE_HEADER_OVERFLOW") return "431 Request Header Fields Too Large";
  // headersTimeoutMs (or Node's requestTimeout) ran out.
  if (code === "ERR_HTTP_REQUEST_TIMEOUT") return "408 Request Timeout";
  return "400 Bad Request";
}

/** Links a TCP socket to the TLS socket the TLS server hands over later, which proxies its address. */
function peerKey(socket: net.Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}`;
}

function ignore(): void {}

function subscribe<T>(set: Set<T>, item: T): () => void {
  set.add(item);
  return () => set.delete(item);
}

export type { AgentApiListenerOptions, ResolvedAgentApiListenerOptions };
