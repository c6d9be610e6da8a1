/**
 * Shared pieces of the benchmarks: HTTP/2 window settings applied to every server and client (so
 * no contender is flow-control bound where another is not), a client session manager that widens
 * the connection window, echo clients, and statistics.
 */
import http2 from "node:http2";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager, type GrpcTransportOptions } from "@connectrpc/connect-node";
import { EchoService } from "../sdk/src/gen/kasbridge/echo/v1/echo_pb.js";
import { streamWindowBytes, widenConnectionWindow } from "../sdk/src/util/http2-windows.js";

// The same windows KAS and agents use, so no contender is flow-control bound where another is not.
export { connectionWindowBytes, streamWindowBytes, widenConnectionWindow } from "../sdk/src/util/http2-windows.js";
export { drained } from "../sdk/src/util/drained.js";

export const h2Settings: http2.Settings = { initialWindowSize: streamWindowBytes };

/** An h2c server with the bench's window settings. */
export function createWideServer(): http2.Http2Server {
  const server = http2.createServer({ settings: h2Settings });
  server.on("session", (session) => widenConnectionWindow(session));
  return server;
}

/** Listens on 127.0.0.1, port 0; resolves with the port (the tests' helper). */
export { listen } from "../testing/src/servers.js";

/** Closes a server and destroys its remaining sessions. */
export function closeServer(server: http2.Http2Server, sessions: Set<http2.Http2Session>): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    for (const session of sessions) session.destroy();
  });
}

/** Tracks a server's sessions so `closeServer` can end them. */
export function trackSessions(server: http2.Http2Server): Set<http2.Http2Session> {
  const sessions = new Set<http2.Http2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  return sessions;
}

type SessionManager = NonNullable<GrpcTransportOptions["sessionManager"]>;

/** connect-node's session manager with the bench's stream window and a widened connection window. */
export class WideSessionManager implements SessionManager {
  readonly authority: string;
  private readonly inner: Http2SessionManager;
  private readonly widened = new WeakSet<http2.Http2Session>();

  constructor(url: string) {
    this.inner = new Http2SessionManager(url, undefined, { settings: h2Settings });
    this.authority = this.inner.authority;
  }

  async request(
    method: string,
    path: string,
    headers: http2.OutgoingHttpHeaders,
    options: Omit<http2.ClientSessionRequestOptions, "signal">,
  ): Promise<http2.ClientHttp2Stream> {
    const stream = await this.inner.request(method, path, headers, options);
    const session = stream.session;
    if (session && !this.widened.has(session)) {
      this.widened.add(session);
      widenConnectionWindow(session);
    }
    return stream;
  }

  notifyResponseByteRead(stream: http2.ClientHttp2Stream): void {
    this.inner.notifyResponseByteRead(stream);
  }

  abort(reason?: Error): void {
    this.inner.abort(reason);
  }
}

export interface EchoClient {
  client: Client<typeof EchoService>;
  close(): void;
}

/** An uncompressed gRPC EchoService client on its own HTTP/2 connection. */
export function echoClient(baseUrl: string, interceptors: Interceptor[] = []): EchoClient {
  const sessionManager = new WideSessionManager(baseUrl);
  const transport = createGrpcTransport({
    baseUrl,
    sessionManager,
    interceptors,
    acceptCompression: [],
    readMaxBytes: 64 << 20,
    writeMaxBytes: 64 << 20,
  });
  return { client: createClient(EchoService, transport), close: () => sessionManager.abort() };
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index];
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Resolves when a writable stream drains or closes. */
export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function fmt(n: number, digits = 2): string {
  return Number.isFinite(n) ? n.toFixed(digits) : "n/a";
}
