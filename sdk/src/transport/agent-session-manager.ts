import * as http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import type { GrpcTransportOptions, Http2SessionManager } from "@connectrpc/connect-node";
import { markConnectionError } from "./connection-error.js";

type SessionManager = NonNullable<GrpcTransportOptions["sessionManager"]>;

/**
 * Wraps connect-node's Http2SessionManager to fix two things about a lost
 * connection, as seen by the agent:
 *
 * - When the socket closes under open streams, Node resets them with CANCEL,
 *   which connect-node reports as Canceled, as if we had cancelled; after a
 *   GOAWAY (NO_ERROR) it closes them with NO_ERROR, which connect-node does not
 *   report at all: a call still waiting for its response waits forever. We
 *   report Unavailable instead, so callers retry. A stream KAS closes with
 *   NO_ERROR before answering, the connection still up, fails with Internal.
 * - The manager forgets a dead session as soon as a new call replaces it, but
 *   late events of that session can still reach it: an "error" Node emits
 *   afterwards (e.g. after a PING timeout) would be an uncaught exception, and
 *   a stream closing afterwards re-arms a PING timer whose ping() throws on
 *   the destroyed session. Every session gets its own "error" listener and a
 *   ping() that is a no-op once the session is destroyed.
 *
 * It also bounds the HTTP/2 handshake: a peer that accepts the connection
 * but never acknowledges our SETTINGS (a hung KAS, a proxy that swallows
 * bytes) fails the call with Unavailable after handshakeTimeoutMs instead of
 * leaving it waiting for the first keepalive PING to time out.
 */
export class AgentSessionManager implements SessionManager {
  readonly authority: string;
  private readonly guarded = new WeakSet<http2.Http2Session>();
  private aborted = false;

  constructor(
    private readonly inner: Http2SessionManager,
    private readonly handshakeTimeoutMs: number,
  ) {
    this.authority = inner.authority;
  }

  async request(
    method: string,
    path: string,
    headers: http2.OutgoingHttpHeaders,
    options: Omit<http2.ClientSessionRequestOptions, "signal">,
  ): Promise<http2.ClientHttp2Stream> {
    const stream = await this.inner.request(method, path, headers, options);
    const session = stream.session;
    if (session && !this.guarded.has(session)) {
      this.guarded.add(session);
      session.on("error", () => {
        // Reported to calls through their streams; see the class comment.
      });
      const ping = session.ping.bind(session) as (...args: unknown[]) => boolean;
      session.ping = ((...args: unknown[]) => (session.destroyed ? false : ping(...args))) as typeof session.ping;
      if (session.pendingSettingsAck) this.bound(session);
    }
    // Whether KAS answered (response headers): a stream closed with NO_ERROR
    // before that ends no connect-node call, which waits for the answer forever.
    let answered = false;
    stream.once("response", () => (answered = true));
    // Registered before connect-node's own listeners, so ours runs first: the
    // error it emits settles the call before the reset code is looked at.
    stream.once("close", () => {
      if (this.aborted) return;
      const rstCode = stream.rstCode;
      const unanswered = rstCode === http2.constants.NGHTTP2_NO_ERROR && !answered;
      const goingAway = session !== undefined && (session.closed || session.destroyed);
      let error: ConnectError | undefined;
      if (goingAway && (unanswered || rstCode === http2.constants.NGHTTP2_CANCEL)) {
        error = connectionError("connection to KAS lost");
      } else if (unanswered) {
        // The connection is up: INTERNAL, as grpc-go maps a NO_ERROR reset.
        error = new ConnectError("KAS closed the stream (NO_ERROR) without answering", Code.Internal);
      }
      if (error && stream.listenerCount("error") > 0) stream.emit("error", error);
    });
    return stream;
  }

  private bound(session: http2.Http2Session): void {
    const timer = setTimeout(() => {
      session.destroy(connectionError(`KAS did not complete the HTTP/2 handshake within ${this.handshakeTimeoutMs} ms`));
    }, this.handshakeTimeoutMs).unref();
    const done = (): void => clearTimeout(timer);
    session.once("localSettings", done); // our SETTINGS were acknowledged
    session.once("close", done);
  }

  notifyResponseByteRead(stream: http2.ClientHttp2Stream): void {
    this.inner.notifyResponseByteRead(stream);
  }

  state(): ReturnType<Http2SessionManager["state"]> {
    return this.inner.state();
  }

  /** Closes the connection for good; open streams fail with the reason. */
  abort(reason: Error): void {
    this.aborted = true;
    this.inner.abort(reason);
  }
}

function connectionError(message: string): ConnectError {
  const err = new ConnectError(message, Code.Unavailable);
  markConnectionError(err);
  return err;
}
