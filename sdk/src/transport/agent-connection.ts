import type * as http2 from "node:http2";
import * as net from "node:net";
import type { Duplex } from "node:stream";
import * as tls from "node:tls";
import { dialWebSocketTunnel } from "./websocket-tunnel.js";
import { hostPort } from "../util/host-port.js";

/** A parsed KAS address (agentk's `--kas-address`). */
export interface AgentApiAddress {
  readonly scheme: "grpc" | "grpcs" | "ws" | "wss";
  /** Host name or IP, without IPv6 brackets. */
  readonly host: string;
  readonly port: number;
  /**
   * Origin of the HTTP/2 connection (`:scheme` and `:authority`). WebSocket
   * tunnels carry cleartext HTTP/2, so theirs is http:// even for wss://.
   */
  readonly origin: string;
  /** The original URL. */
  readonly href: string;
}

/** Parses and checks a KAS URL; default ports as agentk: 80 (grpc, ws), 443 (grpcs, wss). */
export function parseAgentApiAddress(url: string): AgentApiAddress {
  const u = new URL(url);
  const scheme = u.protocol.slice(0, -1);
  if (scheme !== "grpc" && scheme !== "grpcs" && scheme !== "ws" && scheme !== "wss") {
    throw new Error(`unsupported scheme in KAS address ${JSON.stringify(url)}: use grpc, grpcs, ws or wss`);
  }
  const secure = scheme === "grpcs" || scheme === "wss";
  const port = u.port === "" ? (secure ? 443 : 80) : Number(u.port);
  const host = u.hostname.startsWith("[") ? u.hostname.slice(1, -1) : u.hostname;
  return {
    scheme,
    host,
    port,
    origin: `${scheme === "grpcs" ? "https" : "http"}://${hostPort(host, port)}`,
    href: u.href,
  };
}

/** How to reach KAS; used by {@link createAgentConnectionFactory}. */
export interface AgentConnectionOptions {
  /** Handshake headers for WebSocket tunnels. */
  webSocketHeaders: Record<string, string>;
  ca?: string | Buffer | Array<string | Buffer>;
  rejectUnauthorized: boolean;
  tlsServerName?: string;
  connectTimeoutMs: number;
  webSocketMaxMessageBytes: number;
  /** Called with every error of the underlying connection, before HTTP/2 sees it. */
  onConnectionError: (err: Error) => void;
}

/**
 * Returns an http2.connect() `createConnection` for the address's scheme.
 * Owning the socket lets us bound connect time (agentk: 20 s), enable TCP
 * keepalive, and learn which errors came from the connection itself.
 */
export function createAgentConnectionFactory(
  address: AgentApiAddress,
  options: AgentConnectionOptions,
): (authority: URL, option: http2.SessionOptions) => Duplex {
  return () => {
    switch (address.scheme) {
      case "ws":
      case "wss": {
        const { stream } = dialWebSocketTunnel(address.href, {
          headers: options.webSocketHeaders,
          ca: options.ca,
          rejectUnauthorized: options.rejectUnauthorized,
          servername: options.tlsServerName,
          handshakeTimeoutMs: options.connectTimeoutMs,
          maxMessageBytes: options.webSocketMaxMessageBytes,
        });
        stream.prependListener("error", options.onConnectionError);
        return stream;
      }
      case "grpc": {
        const socket = net.connect({ host: address.host, port: address.port });
        return watchConnect(socket, "connect", options);
      }
      case "grpcs": {
        const servername = options.tlsServerName ?? (net.isIP(address.host) ? undefined : address.host);
        const socket = tls.connect({
          host: address.host,
          port: address.port,
          servername,
          ALPNProtocols: ["h2"],
          ca: options.ca,
          rejectUnauthorized: options.rejectUnauthorized,
        });
        socket.once("secureConnect", () => {
          // Without h2 the server would read our preface as garbage.
          if (socket.alpnProtocol !== "h2") {
            socket.destroy(new Error(`KAS at ${address.href} did not negotiate HTTP/2 (ALPN h2)`));
          }
        });
        return watchConnect(socket, "secureConnect", options);
      }
    }
  };
}

function watchConnect<S extends net.Socket>(socket: S, readyEvent: string, options: AgentConnectionOptions): S {
  socket.prependListener("error", options.onConnectionError);
  // TCP keepalive as agentk's dialer: half-open connections die eventually
  // even if HTTP/2 PINGs are disabled.
  socket.setKeepAlive(true, 30_000);
  const timer = setTimeout(() => {
    socket.destroy(Object.assign(new Error(`connecting to KAS timed out after ${options.connectTimeoutMs} ms`), { code: "ETIMEDOUT" }));
  }, options.connectTimeoutMs);
  const done = (): void => clearTimeout(timer);
  socket.once(readyEvent, done);
  socket.once("close", done);
  return socket;
}
