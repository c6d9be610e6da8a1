import http2 from "node:http2";
import type { Logger } from "pino";
import type { createTunnelGateway } from "./tunnel-gateway.js";
import { streamWindowBytes, widenConnectionWindow } from "../../util/http2-windows.js";
import { listen } from "../../util/listen.js";

/** Where a gRPC gateway listens (KAS's internal API on 8153, its private API on 8155). */
export interface GatewayListenOptions {
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
  const settings = { initialWindowSize: streamWindowBytes };
  const server = options.tls
    ? http2.createSecureServer({ ...options.tls, allowHTTP1: false, settings })
    : http2.createServer({ settings });
  let activeCalls = 0;
  const callEnded = () => activeCalls--;
  server.on("stream", (stream, headers) => {
    activeCalls++;
    stream.once("close", callEnded);
    void gateway(stream, headers);
  });
  server.on("sessionError", (error) => logger.debug({ err: error }, `${name} session error`));
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    widenConnectionWindow(session);
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
