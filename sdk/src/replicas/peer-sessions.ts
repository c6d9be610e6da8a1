import type http2 from "node:http2";
import { Http2SessionManager } from "@connectrpc/connect-node";
import { Code, ConnectError } from "@connectrpc/connect";
import { KAS_JWT_AUDIENCE, KAS_JWT_ISSUER, signJwt } from "../auth/jwt.js";
import { createAgentConnectionFactory, parseAgentApiAddress } from "../transport/agent-connection.js";
import { AgentSessionManager } from "../transport/agent-session-manager.js";
import { markConnectionError } from "../transport/connection-error.js";
import { streamWindowBytes, widenConnectionWindow } from "../util/http2-windows.js";

export interface PeerSessionsOptions {
  /** HS256 secret of the private API, shared by the replicas. */
  jwtSecret: Uint8Array;
  /** CA bundle (PEM) to trust for `grpcs://` private API URLs. Default: the system's. */
  ca?: string | Buffer;
  /** Bound on TCP/TLS connect and the HTTP/2 handshake. Default 5 000 ms. */
  connectTimeoutMs?: number;
  /** An unused connection to a replica closes after this long. Default 5 minutes. */
  idleConnectionTimeoutMs?: number;
}

/**
 * One HTTP/2 connection per other replica's private API (created on first use, re-dialled after
 * it drops, closed when idle), and the JWT that replicas present to each other (HS256 with the
 * private API secret, iss and aud gitlab-kas, re-signed every 10 s, valid 30 s).
 */
export class PeerSessions {
  private readonly peers = new Map<string, AgentSessionManager>();
  private readonly widened = new WeakSet<http2.Http2Session>();
  private jwt: { token: Promise<string>; until: number } | undefined;
  private closed = false;

  constructor(private readonly options: PeerSessionsOptions) {}

  /** Opens a gRPC stream for `path` on the replica at `url` (grpc:// or grpcs://). */
  async request(url: string, path: string, headers: http2.OutgoingHttpHeaders): Promise<http2.ClientHttp2Stream> {
    if (this.closed) throw new ConnectError("KAS is shutting down", Code.Unavailable);
    const authorization = `Bearer ${await this.token()}`;
    const stream = await this.peer(url).request("POST", path, { ...headers, authorization }, {});
    const session = stream.session;
    if (session && !this.widened.has(session)) {
      this.widened.add(session);
      widenConnectionWindow(session);
    }
    return stream;
  }

  /** Closes every connection; open streams fail. */
  close(): void {
    this.closed = true;
    for (const peer of this.peers.values()) peer.abort(new ConnectError("KAS is shutting down", Code.Unavailable));
    this.peers.clear();
  }

  private peer(url: string): AgentSessionManager {
    let peer = this.peers.get(url);
    if (peer) return peer;
    const address = parseAgentApiAddress(url);
    if (address.scheme !== "grpc" && address.scheme !== "grpcs") throw new ConnectError(`private API URL ${url} is not grpc:// or grpcs://`, Code.Internal);
    const connectTimeoutMs = this.options.connectTimeoutMs ?? 5_000;
    const createConnection = createAgentConnectionFactory(address, {
      webSocketHeaders: {},
      ca: this.options.ca,
      rejectUnauthorized: true,
      connectTimeoutMs,
      webSocketMaxMessageBytes: 0,
      onConnectionError: markConnectionError,
    });
    const manager = new Http2SessionManager(
      address.origin,
      { pingIntervalMs: 30_000, pingTimeoutMs: 10_000, idleConnectionTimeoutMs: this.options.idleConnectionTimeoutMs ?? 5 * 60_000 },
      { createConnection, settings: { initialWindowSize: streamWindowBytes } },
    );
    peer = new AgentSessionManager(manager, connectTimeoutMs);
    this.peers.set(url, peer);
    return peer;
  }

  private token(): Promise<string> {
    const now = Date.now();
    if (!this.jwt || this.jwt.until <= now) {
      this.jwt = { token: signJwt(this.options.jwtSecret, { issuer: KAS_JWT_ISSUER, audience: KAS_JWT_AUDIENCE }), until: now + 10_000 };
    }
    return this.jwt.token;
  }
}
