import type { ServerHttp2Stream, IncomingHttpHeaders } from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import { DEFAULT_MAX_MESSAGE_BYTES } from "../../grpc/limits.js";
import type { AgentCalls } from "./agent-calls.js";
import type { TunnelCall } from "./server-tunnel.js";
import type { FrameReader } from "../../grpc/grpc-frames.js";
import { writeGrpcFrame } from "../../grpc/grpc-message-writes.js";
import { metaToNodeHeaders, nodeHeadersToHeaders, type MetaMap } from "../../util/metadata.js";
import { grpcStatusHeaders } from "../../grpc/grpc-status-headers.js";
import { drained } from "../../util/drained.js";
import { deadlineTimer } from "../../util/timers.js";
import { parseGatewayRequest, refuseNonGrpc } from "./gateway-request.js";
import type { ApiUnaryMethod } from "../../grpc/api-unary-method.js";
import { ATTR_AGENT_ID, ATTR_GRPC_STATUS, rpcSpan } from "../../tracing/semconv.js";
import { SpanKind, SpanStatusCode, Tracing, type Span } from "../../tracing/tracing.js";

export { routingAgentIdHeader } from "./gateway-request.js";

/**
 * How long a call waits for a tunnel of its agent when the caller's deadline does not end the
 * wait first (GitLab's routing tunnel-find timeout).
 */
export const TUNNEL_FIND_TIMEOUT_MS = 20_000;

/** What a call gets when no tunnel of its agent turned up within the tunnel-find timeout (GitLab's words). */
export function agentConnectionNotFoundError(): ConnectError {
  return new ConnectError("Agent connection not found. Is agent up to date and connected?", Code.DeadlineExceeded);
}

export interface TunnelGatewayOptions {
  /** How calls reach agents (KasServer.agentCalls). */
  agentCalls: AgentCalls;
  logger: Logger;
  /** Checks the caller's credentials; throws a ConnectError to refuse. */
  authorize(headers: Headers): Promise<void>;
  /** Largest request or response message. Default 16 MiB. */
  maxMessageBytes?: number;
  /**
   * How long to wait for an idle tunnel unless the caller's deadline comes first; then the call
   * fails with GitLab's DEADLINE_EXCEEDED "Agent connection not found. Is agent up to date and
   * connected?". Default 20 000 ms (GitLab's tunnel-find timeout).
   */
  defaultTunnelWaitMs?: number;
  /** Methods KAS serves itself rather than routing to an agent (no routing id needed). */
  localMethods?: readonly ApiUnaryMethod[];
  /** Spans of the calls it forwards (no-ops by default): their context goes to the agent as `traceparent`. */
  tracing?: Tracing;
  /** Observes each finished call (metrics). */
  onCallEnd?(info: { agentId: number; method: string; code: Code | 0; durationMs: number }): void;
}

/**
 * Forwards gRPC calls arriving on a raw HTTP/2 stream to an agent through one of its tunnels,
 * message by message, without knowing the message types: headers, messages, trailers and status
 * travel end to end; backpressure holds in both directions; either side's cancellation reaches the
 * other.
 */
export function createTunnelGateway(options: TunnelGatewayOptions) {
  const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const defaultWaitMs = options.defaultTunnelWaitMs ?? TUNNEL_FIND_TIMEOUT_MS;
  const localMethods = new Map((options.localMethods ?? []).map((m) => [m.path, m]));
  const tracing = options.tracing ?? new Tracing();

  return async function handleStream(stream: ServerHttp2Stream, rawHeaders: IncomingHttpHeaders): Promise<void> {
    const started = Date.now();
    const method = String(rawHeaders[":path"] ?? "");
    let agentId = 0;
    const onInvalid = (header: string) => options.logger.warn({ agentId, method, header }, "dropped invalid metadata from the agent's answer");
    let span: Span | undefined;
    const finish = (error: ConnectError | undefined) => {
      options.onCallEnd?.({ agentId, method, code: error?.code ?? 0, durationMs: Date.now() - started });
      if (span) endCallSpan(span, error);
    };
    if (refuseNonGrpc(stream, rawHeaders)) return;
    // Stream errors (client reset, connection lost) surface through "close"/"aborted" below.
    stream.on("error", () => {});
    const callAbort = new AbortController();
    const onClientGone = () => callAbort.abort(new ConnectError("client cancelled the call", Code.Canceled));
    stream.once("close", onClientGone);
    stream.once("aborted", onClientGone);
    let call: TunnelCall | undefined;
    try {
      const headers = nodeHeadersToHeaders(rawHeaders);
      await options.authorize(headers);
      const local = localMethods.get(method);
      if (local) {
        const error = await local.serve(stream, headers.get("grpc-encoding") ?? "identity", callAbort.signal);
        // Not a tunnelled call: onCallEnd (tunnel call metrics) does not see it.
        endStream(stream, { error, trailer: {} }, onInvalid);
        return;
      }
      const request = parseGatewayRequest(method, headers, maxMessageBytes);
      agentId = request.agentId;
      const { reader, timeoutMs, meta } = request;
      // The caller's span (its traceparent) is the parent; the agent gets this call's instead.
      const rpc = rpcSpan(method);
      span = tracing.startSpan(rpc.name, SpanKind.SERVER, tracing.fromHeaders(headers));
      if (span.isRecording()) span.setAttributes({ ...rpc.attributes, [ATTR_AGENT_ID]: agentId });
      tracing.injectMeta(span, meta);
      // Give up slightly before the caller's deadline so it receives our UNAVAILABLE (naming the
      // agent) rather than its own DEADLINE_EXCEEDED.
      const marginMs = timeoutMs === undefined ? 0 : Math.min(250, Math.max(20, Math.ceil(timeoutMs * 0.25)));
      const callerWaitMs = timeoutMs === undefined ? Infinity : Math.max(1, timeoutMs - marginMs);
      // Our own limit (GitLab's tunnel-find timeout) ends the wait with GitLab's error.
      const findTimeout = defaultWaitMs < callerWaitMs;
      // One timer for the wait, cleared as soon as a tunnel is found (AbortSignal.timeout() would
      // keep a timer per call alive for the whole wait period). It can only fire while the
      // registry still holds our waiter, so it never cancels a call that got a tunnel.
      const waitTimer = deadlineTimer(Math.min(defaultWaitMs, callerWaitMs), () => callAbort.abort(tunnelWaitExpired));
      try {
        call = await options.agentCalls.start(agentId, method, meta, callAbort.signal);
      } catch (error) {
        if (findTimeout && callAbort.signal.reason === tunnelWaitExpired) throw agentConnectionNotFoundError();
        throw error;
      } finally {
        clearTimeout(waitTimer);
      }
      const active = call;
      callAbort.signal.addEventListener("abort", () => active.cancel(ConnectError.from(callAbort.signal.reason)), { once: true });
      if (callAbort.signal.aborted) active.cancel();
      // A failed upload (oversized or truncated message) cancels the call, which ends the response.
      void pumpRequest(stream, reader, active).catch((error: unknown) => active.cancel(ConnectError.from(error)));
      const result = await pumpResponse(stream, active, onInvalid);
      endStream(stream, result, onInvalid);
      finish(result.error);
    } catch (error) {
      const ce = ConnectError.from(error);
      call?.cancel(ce);
      endStream(stream, { error: ce, trailer: {} }, onInvalid);
      finish(ce);
    } finally {
      stream.off("close", onClientGone);
      stream.off("aborted", onClientGone);
    }
  };
}

type CallResult = { error?: ConnectError; trailer: MetaMap };

/** Ends a forwarded call's span with its gRPC status. */
function endCallSpan(span: Span, error: ConnectError | undefined): void {
  if (span.isRecording()) {
    span.setAttribute(ATTR_GRPC_STATUS, error?.code ?? 0);
    if (error) span.setStatus({ code: SpanStatusCode.ERROR, message: error.rawMessage });
  }
  span.end();
}

/** Abort reason of a call whose wait for an idle tunnel ran out (the registry words the error). */
const tunnelWaitExpired = new ConnectError("waiting for an idle tunnel timed out", Code.Unavailable);

/**
 * Client -> agent: parses frames and sends them with backpressure (the stream is paused while the
 * tunnel is backed up); half-closes at the end. After a failure the rest of the body is read and
 * discarded rather than the stream destroyed, so the client still receives the status trailers.
 */
export function pumpRequest(stream: ServerHttp2Stream, reader: FrameReader, call: Pick<TunnelCall, "send" | "closeSend">): Promise<void> {
  return new Promise((resolve, reject) => {
    let failed = false;
    const fail = (error: unknown) => {
      if (failed) return;
      failed = true;
      stream.resume();
      reject(error);
    };
    stream.on("data", (chunk: Buffer) => {
      if (failed) return;
      let messages: Uint8Array[];
      try {
        messages = reader.push(chunk);
      } catch (error) {
        return fail(error);
      }
      if (messages.length === 0) return;
      stream.pause();
      void (async () => {
        for (const message of messages) await call.send(message);
      })().then(() => {
        if (!failed) stream.resume();
      }, fail);
    });
    stream.once("end", () => {
      if (failed) return;
      if (reader.hasPartialFrame) return fail(new ConnectError("request ended inside a message", Code.Internal));
      call.closeSend().then(() => {
        // Done: a later "close" of the stream is not a failure of the upload.
        failed = true;
        resolve();
      }, fail);
    });
    stream.once("close", () => {
      if (!failed) fail(new ConnectError("client went away", Code.Canceled));
    });
  });
}

/** Agent -> client: writes header and messages as they arrive; resolves with the final status. */
async function pumpResponse(stream: ServerHttp2Stream, call: TunnelCall, onInvalid: (name: string) => void): Promise<CallResult> {
  try {
    for await (const event of call.events) {
      if (event.kind === "header") {
        if (stream.destroyed) continue;
        stream.respond(
          { ":status": 200, "content-type": "application/grpc", ...metaToNodeHeaders(event.meta, onInvalid) },
          { waitForTrailers: true },
        );
      } else if (event.kind === "message") {
        if (stream.destroyed) continue;
        if (!writeGrpcFrame(stream, event.data)) await drained(stream);
      } else {
        return { error: event.error, trailer: event.trailer };
      }
    }
    return { error: new ConnectError("tunnel ended without status", Code.Internal), trailer: {} };
  } catch (error) {
    return { error: ConnectError.from(error), trailer: {} };
  }
}


function endStream(stream: ServerHttp2Stream, { error, trailer: meta }: CallResult, onInvalid: (name: string) => void): void {
  if (stream.destroyed || stream.closed) return;
  const status = grpcStatusHeaders(error);
  const trailers = { ...metaToNodeHeaders(meta, onInvalid), ...status };
  if (!stream.headersSent) {
    // Trailers-only response.
    stream.respond({ ":status": 200, "content-type": "application/grpc", ...trailers }, { endStream: true });
    return;
  }
  stream.once("wantTrailers", () => {
    try {
      stream.sendTrailers(trailers);
    } catch {
      // The stream was reset meanwhile.
    }
  });
  stream.end();
}
