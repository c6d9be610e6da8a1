import type { IncomingMessage } from "node:http";
import { Duplex } from "node:stream";
import { type ClientOptions, WebSocket, WebSocketServer } from "ws";
import { answerAndHangUp } from "./hang-up.js";

/**
 * The WebSocket subprotocol GitLab's agentk and KAS use to tunnel a cleartext
 * HTTP/2 connection through binary WebSocket frames.
 */
export const WS_TUNNEL_SUBPROTOCOL = "ws-tunnel";

/**
 * GitLab KAS and agentk limit a tunnel's WebSocket messages to 10 MiB; the
 * messages HTTP/2 peers send are far smaller (ours at most 256 KiB).
 */
export const DEFAULT_WEBSOCKET_MAX_MESSAGE_BYTES = 10 * 1024 * 1024;

/**
 * A ws-tunnel WebSocket as a byte stream for an HTTP/2 session: writes
 * become binary messages, binary messages are read as bytes.
 *
 * Not ws's createWebSocketStream: Node's http2 wraps non-socket streams in a
 * JSStreamSocket, which asserts (crashing the process) when it must write
 * while an earlier write or end() is still outstanding. createWebSocketStream
 * holds a write made while connecting until "open" (forever, if the handshake
 * fails) and holds end() until the peer answers the close handshake (up to
 * 30 s, or forever behind a stalled peer), so a peer could crash us. Here
 * every write and end() completes promptly, and a text frame (a protocol
 * violation) ends the connection before its payload reaches HTTP/2.
 */
export class WebSocketTunnelStream extends Duplex {
  private queued: Buffer[] = [];
  private readonly pending = new Set<(err?: Error | null) => void>();

  constructor(private readonly ws: WebSocket) {
    // An HTTP/2 transport has no use for half-open: once the peer stops
    // sending, the tunnel is over.
    super({ allowHalfOpen: false });
    ws.binaryType = "nodebuffer";
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      if (!isBinary) {
        this.destroy(new Error("ws-tunnel: text frames are not allowed"));
        return;
      }
      if (!this.push(data)) ws.pause();
    });
    ws.once("open", () => {
      // Bytes written while connecting go first, in order.
      for (const message of coalesce(this.queued, MAX_COALESCED_MESSAGE_BYTES)) ws.send(message);
      this.queued = [];
    });
    ws.once("close", () => {
      this.queued = [];
      const closed = new Error("ws-tunnel: WebSocket closed");
      for (const callback of this.pending) callback(closed);
      this.pending.clear();
      this.push(null);
    });
    // Kept for the stream's whole life: ws may report errors late (e.g. when
    // a handshake is aborted) and an unheard "error" would be fatal.
    ws.on("error", (err) => this.destroy(err));
  }

  override _read(): void {
    if (this.ws.isPaused) this.ws.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.send(chunk, callback);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (error?: Error | null) => void): void {
    // HTTP/2 writes many frames at once; fewer, bigger messages cost less,
    // but each must stay far below the peer's message limit (10 MiB in
    // GitLab KAS and agentk), and a batch can be as big as a flow-control
    // window.
    const messages = coalesce(chunks.map((c) => c.chunk), MAX_COALESCED_MESSAGE_BYTES);
    if (messages.length === 0) return callback();
    let left = messages.length;
    let failed = false;
    for (const message of messages) {
      this.send(message, (err) => {
        if (failed) return;
        if (err) {
          failed = true;
          callback(err);
        } else if (--left === 0) {
          callback();
        }
      });
    }
  }

  private send(data: Buffer, callback: (error?: Error | null) => void): void {
    switch (this.ws.readyState) {
      case WebSocket.CONNECTING:
        this.queued.push(data);
        callback();
        return;
      case WebSocket.OPEN: {
        let done = false;
        const once = (err?: Error | null): void => {
          if (done) return;
          done = true;
          this.pending.delete(once);
          callback(err);
        };
        this.pending.add(once);
        this.ws.send(data, { binary: true }, once);
        return;
      }
      default:
        callback(new Error("ws-tunnel: WebSocket closed"));
    }
  }

  override _final(callback: (error?: Error | null) => void): void {
    // Start the close handshake but do not wait for the peer's answer.
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(1000);
    else if (this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
    callback();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    if (this.ws.readyState !== WebSocket.CLOSED) this.ws.terminate();
    callback(err);
  }
}

/** Largest WebSocket message made by joining writes (a single larger write is sent as is). */
const MAX_COALESCED_MESSAGE_BYTES = 256 * 1024;

/** Joins consecutive buffers into messages of at most max bytes. */
export function coalesce(buffers: Buffer[], max: number): Buffer[] {
  const messages: Buffer[] = [];
  let group: Buffer[] = [];
  let size = 0;
  for (const b of buffers) {
    if (size > 0 && size + b.length > max) {
      messages.push(group.length === 1 ? group[0]! : Buffer.concat(group, size));
      group = [];
      size = 0;
    }
    group.push(b);
    size += b.length;
  }
  if (size > 0) messages.push(group.length === 1 ? group[0]! : Buffer.concat(group, size));
  return messages;
}

/** Options for {@link createWebSocketTunnelAcceptor}. */
export interface WebSocketTunnelAcceptorOptions {
  /**
   * Largest WebSocket message accepted, in bytes; a bigger one closes the
   * connection. Default 10 MiB (GitLab KAS's limit).
   */
  maxMessageBytes?: number;
  /** Receives each accepted tunnel as a byte stream for the HTTP/2 server. */
  onTunnel: (stream: Duplex, ws: WebSocket, req: IncomingMessage) => void;
}

/** Handles HTTP/1.1 upgrade requests on a server that offers ws-tunnel. */
export interface WebSocketTunnelAcceptor {
  /** Pass an http.Server "upgrade" event here; it answers or accepts. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** Terminates every accepted WebSocket. */
  terminateAll(): void;
  /** Currently open tunnel WebSockets. */
  readonly clients: ReadonlySet<WebSocket>;
}

/**
 * Accepts WebSocket upgrades that ask for the ws-tunnel subprotocol, on any
 * path (agentk puts whatever path the operator configured in its URL), and
 * refuses everything else with 400: this port speaks nothing but tunnels
 * over WebSocket.
 */
export function createWebSocketTunnelAcceptor(options: WebSocketTunnelAcceptorOptions): WebSocketTunnelAcceptor {
  const wss = new WebSocketServer({
    noServer: true,
    // Compression is off on both GitLab sides; HTTP/2 data is often already compressed.
    perMessageDeflate: false,
    maxPayload: options.maxMessageBytes ?? DEFAULT_WEBSOCKET_MAX_MESSAGE_BYTES,
    handleProtocols: (protocols) => (protocols.has(WS_TUNNEL_SUBPROTOCOL) ? WS_TUNNEL_SUBPROTOCOL : false),
    // ws keeps the set of accepted clients, so closing can terminate them.
    clientTracking: true,
  });

  return {
    handleUpgrade(req, socket, head) {
      const upgrade = (req.headers.upgrade ?? "").toLowerCase();
      const protocols = (req.headers["sec-websocket-protocol"] ?? "").split(",").map((p) => p.trim());
      if (upgrade !== "websocket") {
        return refuse(socket, "expected a WebSocket upgrade");
      }
      if (!protocols.includes(WS_TUNNEL_SUBPROTOCOL)) {
        return refuse(socket, `expected WebSocket subprotocol "${WS_TUNNEL_SUBPROTOCOL}"`);
      }
      // handleUpgrade validates the rest of the handshake (key, version) and
      // answers 400 itself when it is wrong.
      wss.handleUpgrade(req, socket, head, (ws) => {
        options.onTunnel(new WebSocketTunnelStream(ws), ws, req);
      });
    },
    terminateAll() {
      for (const ws of wss.clients) ws.terminate();
    },
    get clients() {
      return wss.clients;
    },
  };
}

function refuse(socket: Duplex, reason: string): void {
  answerAndHangUp(socket, "400 Bad Request", `${reason}\n`);
}

/** Options for {@link dialWebSocketTunnel}. */
export interface DialWebSocketTunnelOptions {
  /** Extra HTTP headers for the handshake request (agentk's --kas-header, User-Agent). */
  headers?: Record<string, string>;
  /** Trusted CA certificates (PEM) for wss://; default: Node's bundled roots. */
  ca?: string | Buffer | Array<string | Buffer>;
  /** Verify the server certificate for wss://. Default true. */
  rejectUnauthorized?: boolean;
  /** TLS server name (SNI and certificate check) for wss://; default: the URL's host. */
  servername?: string;
  /** Time allowed for the TCP, TLS and WebSocket handshakes, in ms. Default 20 000. */
  handshakeTimeoutMs?: number;
  /** Largest WebSocket message accepted, in bytes. Default 10 MiB. */
  maxMessageBytes?: number;
}

/**
 * Opens a ws-tunnel WebSocket and returns it as a byte stream right away.
 * Writes made before the handshake completes are queued by the stream, which
 * is what lets http2.connect() use this as its createConnection().
 */
export function dialWebSocketTunnel(url: string, options: DialWebSocketTunnelOptions = {}): { stream: Duplex; ws: WebSocket } {
  // servername reaches tls.connect() through https.request(); ws's types omit it.
  const wsOptions: ClientOptions & { servername?: string } = {
    perMessageDeflate: false,
    headers: options.headers,
    ca: options.ca,
    rejectUnauthorized: options.rejectUnauthorized ?? true,
    servername: options.servername,
    handshakeTimeout: options.handshakeTimeoutMs ?? 20_000,
    maxPayload: options.maxMessageBytes ?? DEFAULT_WEBSOCKET_MAX_MESSAGE_BYTES,
    // A redirect would silently send headers (tokens) elsewhere; agentk refuses too.
    followRedirects: false,
  };
  const ws = new WebSocket(url, [WS_TUNNEL_SUBPROTOCOL], wsOptions);
  return { stream: new WebSocketTunnelStream(ws), ws };
}
