import type { IncomingMessage, ServerResponse } from "node:http";
import http2 from "node:http2";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { Logger } from "pino";
import {
  ConnectRequestSchema,
  ConnectResponseSchema,
  ReverseTunnel,
  type ConnectRequest,
  type ConnectResponse,
} from "../gen/gitlab/agent/reverse_tunnel/rpc/rpc_pb.js";
import { ServerTunnel } from "../tunnel/server/server-tunnel.js";
import type { TunnelRegistry } from "../tunnel/server/tunnel-registry.js";
import { FrameReader, frameHeader } from "../util/grpc-frames.js";
import { nodeHeadersToHeaders } from "../util/metadata.js";
import type { AgentAuthenticator } from "./agent-authenticator.js";
import { grpcStatusHeaders } from "./grpc-status-headers.js";
import { parseGrpcTimeout } from "./tunnel-gateway.js";
import { drained } from "../util/drained.js";

export interface ReverseTunnelServiceDeps {
  auth: AgentAuthenticator;
  registry: TunnelRegistry;
  logger: Logger;
  /** How long a new stream may take to send its descriptor. Default 10 000 ms. */
  descriptorTimeoutMs?: number;
  /** Ends all tunnels when KAS shuts down. */
  shutdownSignal: AbortSignal;
  /**
   * Largest tunnel message (ConnectRequest) accepted from an agent on the raw HTTP/2 path, in bytes.
   * Default 16 MiB + 1 KiB (a tunnelled message plus its envelope).
   */
  maxMessageBytes?: number;
}

/** `/gitlab.agent.reverse_tunnel.rpc.ReverseTunnel/Connect` */
export const reverseTunnelConnectPath = `/${ReverseTunnel.typeName}/${ReverseTunnel.method.connect.name}`;

/**
 * The KAS half of `gitlab.agent.reverse_tunnel.rpc.ReverseTunnel/Connect` as a connect-es service.
 * KAS serves gRPC-over-HTTP/2 tunnels with {@link withRawReverseTunnel} instead (much less memory
 * per idle stream); this implementation handles what that one passes on (Connect protocol,
 * gRPC-web, HTTP/1.1) and embedders that mount the service on their own router.
 */
export function reverseTunnelService(deps: ReverseTunnelServiceDeps): Partial<ServiceImpl<typeof ReverseTunnel>> {
  const openTunnel = tunnelOpener(deps);
  return {
    async *connect(requests: AsyncIterable<ConnectRequest>, ctx: HandlerContext): AsyncIterable<ConnectResponse> {
      const opened = await openTunnel(ctx.requestHeader, requests[Symbol.asyncIterator](), (end) => {
        const signal = ctx.signal;
        if (signal.aborted) return end(signal.reason);
        signal.addEventListener("abort", () => end(signal.reason), { once: true });
      });
      if (!opened) return;
      try {
        yield* opened.tunnel.output();
      } finally {
        opened.close();
      }
    },
  };
}

type NodeRequestHandler = (req: IncomingMessage | http2.Http2ServerRequest, res: ServerResponse | http2.Http2ServerResponse) => void;

/**
 * Wraps the agent API's request handler so that gRPC `ReverseTunnel/Connect` streams over HTTP/2
 * are served directly on the HTTP/2 stream, without connect-es. An idle tunnel is the steady state
 * of every connected agent (thousands per KAS), and connect-es's streaming machinery costs tens of
 * KiB per open call; here an idle stream holds little more than its ServerTunnel. Everything else
 * (other methods, other protocols, HTTP/1.1) goes to `next`.
 */
export function withRawReverseTunnel<H extends NodeRequestHandler>(next: H, deps: ReverseTunnelServiceDeps): H {
  const maxMessageBytes = deps.maxMessageBytes ?? 16 * 1024 * 1024 + 1024;
  const openTunnel = tunnelOpener(deps);
  const handler = (req: IncomingMessage | http2.Http2ServerRequest, res: ServerResponse | http2.Http2ServerResponse) => {
    if (req instanceof http2.Http2ServerRequest && res instanceof http2.Http2ServerResponse && isGrpcTunnelRequest(req)) {
      void serveRawTunnel(openTunnel, maxMessageBytes, req, res);
    } else {
      next(req, res);
    }
  };
  return handler as H;
}

function isGrpcTunnelRequest(req: http2.Http2ServerRequest): boolean {
  if (req.method !== "POST" || req.url !== reverseTunnelConnectPath) return false;
  const contentType = req.headers["content-type"];
  return contentType === "application/grpc" || contentType === "application/grpc+proto";
}

interface OpenTunnel {
  tunnel: ServerTunnel;
  /** Withdraws and closes the tunnel, releases the token watch. Idempotent. */
  close(): void;
}

type TunnelOpener = (
  header: Headers,
  input: AsyncIterator<ConnectRequest>,
  /** How the stream tells the tunnel it ended: called once with a function to call then. */
  onStreamEnd: (end: (reason: unknown) => void) => void,
) => Promise<OpenTunnel | undefined>;

/**
 * Returns a function that authenticates a stream, waits for the agent's descriptor and registers
 * the tunnel as idle (undefined when the agent ends the stream before sending a descriptor).
 * A tunnel ends with its stream, a revocation of its token, or KAS shutting down. No signal is
 * combined per stream: shutdown is one listener for all streams, revocation one per stream on the
 * token's shared signal.
 */
function tunnelOpener(deps: ReverseTunnelServiceDeps): TunnelOpener {
  const open = new Set<(reason: unknown) => void>();
  const onShutdown = () => {
    for (const end of [...open]) end(deps.shutdownSignal.reason);
  };
  if (!deps.shutdownSignal.aborted) deps.shutdownSignal.addEventListener("abort", onShutdown, { once: true });

  return async (header, input, onStreamEnd) => {
    const info = await deps.auth.authenticate(header);
    const watch = deps.auth.watchToken(info);
    let tunnel: ServerTunnel | undefined;
    let ended: { reason: unknown } | undefined;
    let failWait: ((error: ConnectError) => void) | undefined;
    const end = (reason: unknown) => {
      if (ended) return;
      ended = { reason };
      if (tunnel) tunnel.streamEnded(reason);
      else failWait?.(ConnectError.from(reason ?? new ConnectError("stream closed", Code.Canceled)));
    };
    const onRevoked = () => end(watch.signal.reason);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      open.delete(end);
      watch.signal.removeEventListener("abort", onRevoked);
      watch.release();
    };
    if (watch.signal.aborted) end(watch.signal.reason);
    else if (deps.shutdownSignal.aborted) end(deps.shutdownSignal.reason);
    else {
      open.add(end);
      watch.signal.addEventListener("abort", onRevoked, { once: true });
      onStreamEnd(end);
    }
    try {
      const first = await new Promise<IteratorResult<ConnectRequest>>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new ConnectError("no tunnel descriptor received in time", Code.DeadlineExceeded)),
          deps.descriptorTimeoutMs ?? 10_000,
        );
        failWait = (error) => {
          clearTimeout(timer);
          reject(error);
        };
        if (ended) return failWait(ConnectError.from(ended.reason ?? new ConnectError("stream closed", Code.Canceled)));
        input.next().then(
          (result) => {
            clearTimeout(timer);
            resolve(result);
          },
          (error: unknown) => {
            clearTimeout(timer);
            reject(error);
          },
        );
      });
      failWait = undefined;
      if (first.done) {
        release();
        return undefined;
      }
      if (first.value.msg.case !== "descriptor" || !first.value.msg.value.agentDescriptor) {
        throw new ConnectError(
          `tunnel protocol violation: expected descriptor, got ${first.value.msg.case ?? "an empty message"}`,
          Code.InvalidArgument,
        );
      }
      const opened = new ServerTunnel(info, first.value.msg.value.agentDescriptor, input);
      tunnel = opened;
      if (ended) opened.streamEnded(ended.reason);
      const unregister = deps.registry.register(opened);
      opened.watchIdle();
      return {
        tunnel: opened,
        close() {
          unregister();
          opened.close();
          release();
        },
      };
    } catch (error) {
      release();
      throw error;
    }
  };
}

/** One `ReverseTunnel/Connect` call over gRPC on a raw HTTP/2 stream (through Node's compat objects). */
async function serveRawTunnel(
  openTunnel: TunnelOpener,
  maxMessageBytes: number,
  req: http2.Http2ServerRequest,
  res: http2.Http2ServerResponse,
): Promise<void> {
  // Stream errors surface as "close", which RequestMessages turns into the tunnel's end.
  res.on("error", ignore);
  req.on("error", ignore);
  let timer: NodeJS.Timeout | undefined;
  let opened: OpenTunnel | undefined;
  let error: ConnectError | undefined;
  let input: RequestMessages | undefined;
  try {
    const reader = new FrameReader(maxMessageBytes, firstHeader(req.headers["grpc-encoding"]) ?? "identity");
    input = new RequestMessages(req, reader);
    const timeoutMs = parseGrpcTimeout(firstHeader(req.headers["grpc-timeout"]) ?? null);
    opened = await openTunnel(nodeHeadersToHeaders(req.headers), input, (end) => {
      // The stream's end (agent gone, reset) is seen by RequestMessages, which passes it on.
      input!.onClosed = end;
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => end(new ConnectError("the tunnel's deadline passed", Code.DeadlineExceeded)), timeoutMs);
      }
    });
    if (opened) {
      const output = opened.tunnel.output()[Symbol.asyncIterator]();
      for (;;) {
        const next = await output.next();
        if (next.done) break;
        if (res.writableEnded || res.destroyed) break;
        if (!res.headersSent) writeHead(res);
        const message = toBinary(ConnectResponseSchema, next.value);
        res.write(frameHeader(message.byteLength));
        if (!res.write(message)) await drained(res);
      }
    }
  } catch (e) {
    error = ConnectError.from(e);
  } finally {
    clearTimeout(timer);
    opened?.close();
    input?.dispose();
  }
  endResponse(req, res, error);
}

function ignore(): void {}

function firstHeader(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function writeHead(res: http2.Http2ServerResponse): void {
  res.writeHead(200, { "content-type": "application/grpc", "grpc-accept-encoding": "gzip" });
}

/** Sends the status trailers (after headers, even when no message was sent) and ends the stream. */
function endResponse(req: http2.Http2ServerRequest, res: http2.Http2ServerResponse, error: ConnectError | undefined): void {
  if (res.writableEnded || res.destroyed || res.stream.destroyed) return;
  if (!res.headersSent) writeHead(res);
  res.addTrailers(grpcStatusHeaders(error));
  res.end();
  if (!req.complete) {
    // The agent still has its side open: once our trailers are out, ask it to stop sending
    // (RST_STREAM NO_ERROR after a complete response, RFC 9113 §8.1) rather than keep the stream.
    res.once("finish", () => {
      if (!res.stream.destroyed) res.stream.close(http2.constants.NGHTTP2_NO_ERROR);
    });
  }
}


/**
 * The agent's messages, decoded from the request body as they arrive. At most a few decoded
 * messages wait here: beyond that the request is paused, so HTTP/2 flow control holds the agent.
 */
class RequestMessages implements AsyncIterator<ConnectRequest> {
  private static readonly highWater = 4;
  private readonly queue: ConnectRequest[] = [];
  private waiter: { resolve(r: IteratorResult<ConnectRequest>): void; reject(e: unknown): void } | undefined;
  private ended = false;
  private failure: ConnectError | undefined;
  private paused = false;

  constructor(
    private readonly req: http2.Http2ServerRequest,
    private readonly reader: FrameReader,
  ) {
    req.on("data", this.onData);
    req.once("end", this.onEnd);
    req.once("close", this.onClose);
  }

  next(): Promise<IteratorResult<ConnectRequest>> {
    if (this.queue.length > 0) {
      const value = this.queue.shift()!;
      if (this.paused && this.queue.length < RequestMessages.highWater) {
        this.paused = false;
        this.req.resume();
      }
      return Promise.resolve({ done: false, value });
    }
    if (this.failure) return Promise.reject(this.failure);
    if (this.ended) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  /** Stops decoding; later data is read and dropped so the stream can finish. */
  dispose(): void {
    this.req.off("data", this.onData);
    this.req.off("end", this.onEnd);
    this.req.off("close", this.onClose);
    this.queue.length = 0;
    this.req.resume();
  }

  private readonly onData = (chunk: Buffer) => {
    if (this.failure || this.ended) return;
    try {
      for (const frame of this.reader.push(chunk)) {
        let message: ConnectRequest;
        try {
          message = fromBinary(ConnectRequestSchema, frame);
        } catch (error) {
          throw new ConnectError(`invalid tunnel message: ${(error as Error).message}`, Code.InvalidArgument);
        }
        const waiter = this.waiter;
        if (waiter) {
          this.waiter = undefined;
          waiter.resolve({ done: false, value: message });
        } else {
          this.queue.push(message);
        }
      }
    } catch (error) {
      this.fail(ConnectError.from(error));
      return;
    }
    if (this.queue.length >= RequestMessages.highWater && !this.paused) {
      this.paused = true;
      this.req.pause();
    }
  };

  private readonly onEnd = () => {
    if (this.failure) return;
    if (this.reader.hasPartialFrame) return this.fail(new ConnectError("agent stream ended inside a message", Code.InvalidArgument));
    this.ended = true;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.resolve({ done: true, value: undefined });
  };

  /** Told when the stream closes (agent gone, reset), whether or not its request side had ended. */
  onClosed: ((reason: ConnectError) => void) | undefined;

  private readonly onClose = () => {
    const reason = new ConnectError("agent stream closed", Code.Canceled);
    if (!this.ended) this.fail(reason);
    this.onClosed?.(reason);
  };

  private fail(error: ConnectError): void {
    if (this.failure) return;
    this.failure = error;
    this.queue.length = 0;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(error);
  }
}
