import http2 from "node:http2";
import type { Logger } from "pino";
import type { createTunnelGateway } from "./tunnel-gateway.js";
import { http2SettingsWithLimits, resolveListenerLimits, superviseSessionWithLimits, type ListenerLimits } from "../../transport/listener-limits.js";
import { resetStream } from "../../transport/request-guard.js";
import { streamWindowBytes, widenConnectionWindow } from "../../util/http2-windows.js";
import { listen } from "../../util/listen.js";

/** The gateways' defaults of the limits every listener has (KAS's internal API and private API). */
export const GATEWAY_LIMITS = {
  maxConnections: 1_000,
  // One connection of the platform or of another replica carries all of its calls (watches too).
  maxConcurrentStreams: 10_000,
  headersTimeoutMs: 20_000,
  idleTimeoutMs: 600_000,
} as const;

/**
 * Where a gRPC gateway listens (KAS's internal API on 8153, its private API on 8155). The limits
 * default to {@link GATEWAY_LIMITS}: at most 1 000 connections and 10 000 concurrent streams per
 * connection; a connection that opens no stream within 20 000 ms, or has none open for 600 000 ms
 * (10 min), is closed.
 */
export interface GatewayListenOptions extends ListenerLimits {
  /** Default "127.0.0.1". */
  host?: string;
  port: number;
  /** Serve TLS (HTTP/2 with ALPN h2) instead of cleartext h2c. */
  tls?: { cert: string | Buffer; key: string | Buffer };
}

export interface GatewayListener {
  readonly address: { host: string; port: number };
  /** Sends GOAWAY to every client and stops listening; resolves when the last session ends. */
  close(): Promise<void>;
  /** Drops every session at once (after the grace period). */
  destroySessions(): void;
  /** Calls in flight (streams open). */
  readonly activeCalls: number;
}

/** An HTTP/2 server whose every stream goes to `gateway`, with KAS's wide flow-control windows. */
export async function listenGateway(
  name: string,
  options: GatewayListenOptions,
  gateway: ReturnType<typeof createTunnelGateway>,
  logger: Logger,
): Promise<GatewayListener> {
  const limits = resolveListenerLimits(options, GATEWAY_LIMITS);
  const settings = http2SettingsWithLimits({ initialWindowSize: streamWindowBytes }, limits);
  const server = options.tls
    ? http2.createSecureServer({ ...options.tls, allowHTTP1: false, settings, handshakeTimeout: limits.headersTimeoutMs })
    : http2.createServer({ settings });
  server.maxConnections = limits.maxConnections;
  let activeCalls = 0;
  const callEnded = () => activeCalls--;
  server.on("stream", (stream, headers) => {
    activeCalls++;
    stream.once("close", callEnded);
    // The gateway answers every failure it knows of; this catches the ones it does not.
    gateway(stream, headers).catch((err: unknown) => {
      logger.warn({ err, path: headers[":path"] }, `${name}: a call failed outside its handler`);
      resetStream(stream);
    });
  });
  server.on("sessionError", (error) => logger.debug({ err: error }, `${name} session error`));
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    widenConnectionWindow(session);
    superviseSessionWithLimits(session, limits);
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  const address = await listen(server, options.port, options.host ?? "127.0.0.1");
  return {
    address,
    close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const session of sessions) session.close();
      return closed;
    },
    destroySessions() {
      for (const session of sessions) session.destroy();
    },
    get activeCalls() {
      return activeCalls;
    },
  };
}
