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
} from "../../gen/gitlab/agent/reverse_tunnel/rpc/rpc_pb.js";
import { ServerTunnel, type TunnelOutput } from "./server-tunnel.js";
import type { TunnelRegistry } from "./tunnel-registry.js";
import type { FrameReader } from "../../grpc/grpc-frames.js";
import { DEFAULT_MAX_MESSAGE_BYTES, TUNNEL_ENVELOPE_BYTES } from "../../grpc/limits.js";
import type { AgentAuthenticator } from "../../kas/agent-authenticator.js";
import { resetAfterMessages } from "../../grpc/grpc-message-writes.js";
import { deadlineTimer } from "../../util/timers.js";
import { AgentStreamGroups, type AgentStreamMember, type TokenGroup } from "../../kas/agent-stream-groups.js";
import { isGrpcRequest } from "../../grpc/raw-dispatch.js";
import {
  attachRawStream,
  authorizationHeader,
  detachRawStream,
  endGrpcResponse,
  requestFrameReader,
  requestTimeoutMs,
  writeGrpcMessage,
  type RawStreamOwner,
} from "../../grpc/raw-wire.js";

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
 * KAS serves gRPC-over-HTTP/2 tunnels with {@link rawReverseTunnelStreams} instead (much less memory
 * per idle stream); this implementation handles what that one passes on (Connect protocol,
 * gRPC-web, HTTP/1.1) and embedders that mount the service on their own router.
 */
export function reverseTunnelService(deps: ReverseTunnelServiceDeps): Partial<ServiceImpl<typeof ReverseTunnel>> {
  const streams = new TunnelStreams(deps);
  return {
    async *connect(requests: AsyncIterable<ConnectRequest>, ctx: HandlerContext): AsyncIterable<ConnectResponse> {
      const member = new TunnelStream(streams);
      const signal = ctx.signal;
      const onAbort = () => member.end(signal.reason);
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
      try {
        const tunnel = await streams.open(ctx.requestHeader, member, requests[Symbol.asyncIterator]());
        if (tunnel) yield* tunnel.output();
      } finally {
        signal.removeEventListener("abort", onAbort);
        streams.close(member);
      }
    },
  };
}

/**
 * Serves gRPC `ReverseTunnel/Connect` streams over HTTP/2 directly on the HTTP/2 stream, without
 * connect-es and without Node's compatibility objects: for the agent API listener's
 * `streamHandler`. An idle tunnel is the steady state of every connected agent (thousands per KAS),
 * and connect-es's streaming machinery costs tens of KiB per open call; here an idle stream holds
 * one small object, its ServerTunnel and a few set entries. Returns false for every other stream
 * (other methods, Connect and gRPC-web requests), which then go to the request handler.
 */
export function rawReverseTunnelStreams(
  deps: ReverseTunnelServiceDeps,
): (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => boolean {
  const maxMessageBytes = deps.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES + TUNNEL_ENVELOPE_BYTES;
  const streams = new TunnelStreams(deps);
  return (stream, headers) => {
    if (!isGrpcRequest(headers, reverseTunnelConnectPath)) return false;
    void serveRawTunnel(streams, maxMessageBytes, stream, headers);
    return true;
  };
}

/**
 * One Connect stream as {@link TunnelStreams} tracks it, from authentication to its end. Revocation
 * and shutdown end it through `end`; the stream itself calls `end` when it goes away.
 */
class TunnelStream implements AgentStreamMember {
  tunnel: ServerTunnel | undefined;
  /** Takes the tunnel out of the registry. */
  withdraw: (() => void) | undefined;
  ended: { reason: unknown } | undefined;
  /** While waiting for the descriptor: fails that wait. */
  failWait: ((error: ConnectError) => void) | undefined;
  group: TokenGroup | undefined;

  constructor(readonly streams: TunnelStreams) {}

  /** Where the tunnel's responses go; undefined: the tunnel's own queue, read by the handler. */
  output(): TunnelOutput | undefined {
    return undefined;
  }

  end(reason: unknown): void {
    if (this.ended) return;
    this.ended = { reason };
    if (this.tunnel) this.tunnel.streamEnded(reason);
    else this.failWait?.(endError(reason));
  }
}

function endError(reason: unknown): ConnectError {
  return ConnectError.from(reason ?? new ConnectError("stream closed", Code.Canceled));
}

/**
 * Authenticates streams, waits for their descriptors and registers their tunnels as idle. A tunnel
 * ends with its stream, a revocation of its token, or KAS shutting down. Nothing is subscribed per
 * stream: shutdown is one listener for all streams, revocation one per token.
 */
class TunnelStreams {
  private readonly groups: AgentStreamGroups;

  constructor(private readonly deps: ReverseTunnelServiceDeps) {
    this.groups = new AgentStreamGroups(deps.auth, deps.shutdownSignal);
  }

  /**
   * Opens `member`'s tunnel: undefined when the agent ended the stream before sending a
   * descriptor. Throws (and forgets the member) on an authentication or protocol error.
   */
  async open(header: Headers, member: TunnelStream, input: AsyncIterator<ConnectRequest>): Promise<ServerTunnel | undefined> {
    const info = await this.deps.auth.authenticate(header);
    this.groups.join(member, info);
    try {
      const first = await new Promise<IteratorResult<ConnectRequest>>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new ConnectError("no tunnel descriptor received in time", Code.DeadlineExceeded)),
          this.deps.descriptorTimeoutMs ?? 10_000,
        );
        member.failWait = (error) => {
          clearTimeout(timer);
          reject(error);
        };
        if (member.ended) return member.failWait(endError(member.ended.reason));
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
      member.failWait = undefined;
      if (first.done) {
        this.groups.leave(member);
        return undefined;
      }
      if (first.value.msg.case !== "descriptor" || !first.value.msg.value.agentDescriptor) {
        throw new ConnectError(
          `tunnel protocol violation: expected descriptor, got ${first.value.msg.case ?? "an empty message"}`,
          Code.InvalidArgument,
        );
      }
      const output = member.output();
      const tunnel = new ServerTunnel(info, first.value.msg.value.agentDescriptor, input, undefined, output);
      member.tunnel = tunnel;
      if (member.ended) tunnel.streamEnded(member.ended.reason);
      member.withdraw = this.deps.registry.register(tunnel);
      // A stream that writes its own responses also watches its idle agent itself.
      if (!output) tunnel.watchIdle();
      return tunnel;
    } catch (error) {
      this.groups.leave(member);
      throw error;
    }
  }

  /** Withdraws and closes the member's tunnel and forgets the member. Idempotent. */
  close(member: TunnelStream): void {
    const withdraw = member.withdraw;
    member.withdraw = undefined;
    withdraw?.();
    member.tunnel?.close();
    this.groups.leave(member);
  }
}

const { NGHTTP2_CANCEL } = http2.constants;

/** Largest first message (the agent's descriptor) read before the tunnel is set up. */
export const maxDescriptorBytes = 64 * 1024;

/** One `ReverseTunnel/Connect` call over gRPC on a raw HTTP/2 stream; only the opening is async. */
async function serveRawTunnel(
  streams: TunnelStreams,
  maxMessageBytes: number,
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
): Promise<void> {
  let raw: RawTunnelStream | undefined;
  try {
    raw = new RawTunnelStream(streams, stream, requestFrameReader(headers, maxMessageBytes));
    const timeoutMs = requestTimeoutMs(headers);
    if (timeoutMs !== undefined) raw.endAfter(timeoutMs);
    const tunnel = await streams.open(authorizationHeader(headers), raw, raw);
    // Without a descriptor (the agent ended the stream) there is nothing to serve.
    if (!tunnel) raw.close();
  } catch (error) {
    if (raw) raw.close(ConnectError.from(error));
    else endGrpcResponse(stream, ConnectError.from(error));
  }
}

/**
 * A `ReverseTunnel/Connect` stream served on the HTTP/2 stream itself: the tunnel's input (the
 * agent's messages, decoded as they arrive) and its output (responses written as gRPC frames, the
 * status sent as trailers). While the tunnel is idle nothing waits on a promise: a message from the
 * agent is a protocol violation and ends the tunnel, as does the end of the agent's stream.
 */
class RawTunnelStream extends TunnelStream implements AsyncIterator<ConnectRequest>, TunnelOutput, RawStreamOwner {
  private static readonly highWater = 4;
  /** Decoded messages of a running call that wait for the tunnel to take them. */
  private queue: ConnectRequest[] | undefined;
  private waiter: { resolve(r: IteratorResult<ConnectRequest>): void; reject(e: unknown): void } | undefined;
  private inputEnded = false;
  private failure: ConnectError | undefined;
  private paused = false;
  private outputEnded = false;
  private timer: NodeJS.Timeout | undefined;

  /** The reader's real limit while the descriptor has not been taken (then: undefined). */
  private limitAfterDescriptor: number | undefined;

  constructor(
    streams: TunnelStreams,
    private readonly stream: http2.ServerHttp2Stream,
    private readonly reader: FrameReader,
  ) {
    super(streams);
    // Until the agent is authenticated and its descriptor taken, read one small message only: the
    // stream flows from here while authentication runs, and a stranger must not make KAS buffer
    // several maximum-size messages per stream.
    if (reader.maxMessageBytes > maxDescriptorBytes) {
      this.limitAfterDescriptor = reader.maxMessageBytes;
      reader.maxMessageBytes = maxDescriptorBytes;
    }
    attachRawStream(stream, this);
  }

  override output(): TunnelOutput {
    return this;
  }

  /** Ends the tunnel when the agent's own `grpc-timeout` passes. */
  endAfter(timeoutMs: number): void {
    this.timer = deadlineTimer(timeoutMs, () => this.end(new ConnectError("the tunnel's deadline passed", Code.DeadlineExceeded)));
  }

  next(): Promise<IteratorResult<ConnectRequest>> {
    const queue = this.queue;
    if (queue && queue.length > 0) {
      const value = queue.shift()!;
      if (this.paused && queue.length < RawTunnelStream.highWater) {
        this.paused = false;
        this.stream.resume();
      }
      return Promise.resolve({ done: false, value });
    }
    if (this.failure) return Promise.reject(this.failure);
    if (this.inputEnded) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  push(message: ConnectResponse): Promise<void> {
    const stream = this.stream;
    if (this.outputEnded || stream.destroyed || stream.writableEnded) {
      return Promise.reject(new ConnectError("tunnel stream ended", Code.Unavailable));
    }
    try {
      return writeGrpcMessage(stream, toBinary(ConnectResponseSchema, message));
    } catch (error) {
      // respond() throws on a stream reset since the check above.
      return Promise.reject(ConnectError.from(error, Code.Unavailable));
    }
  }

  /** Ends the response (status `error`, or OK) and lets go of the stream and the tunnel. Idempotent. */
  close(error?: ConnectError): void {
    if (this.outputEnded) return;
    this.outputEnded = true;
    clearTimeout(this.timer);
    this.streams.close(this);
    this.queue = undefined;
    detachRawStream(this.stream);
    if (error?.code === Code.Canceled && !this.inputEnded && !this.stream.closed) {
      // A call its caller cancelled while the agent still sends: reset the stream rather than send
      // a status. A grpc-go agent (GitLab's agentk) answers a status that ends a stream it is still
      // writing with a reset of its own, and Node's HTTP/2 server counts received resets against
      // nghttp2's rapid-reset limit (about 1,000, then 33/s): a storm of cancelled calls would make
      // KAS refuse the agent's new tunnels. Resets KAS sends do not count. The reset waits for the
      // messages already written: one cut by it would reach the agent as a truncated message
      // (grpc-go: INTERNAL "unexpected EOF", and agentk backs off), not as a cancel.
      resetAfterMessages(this.stream, NGHTTP2_CANCEL);
      return;
    }
    endGrpcResponse(this.stream, error);
  }

  onData(chunk: Buffer): void {
    if (this.failure || this.inputEnded) return;
    try {
      for (const frame of this.reader.push(chunk)) {
        let message: ConnectRequest;
        try {
          message = fromBinary(ConnectRequestSchema, frame);
        } catch (error) {
          throw new ConnectError(`invalid tunnel message: ${(error as Error).message}`, Code.InvalidArgument);
        }
        this.deliver(message);
      }
    } catch (error) {
      this.fail(ConnectError.from(error));
      return;
    }
    // Before the descriptor is taken one message is all there is to read.
    const highWater = this.tunnel ? RawTunnelStream.highWater : 1;
    if (!this.paused && this.queue && this.queue.length >= highWater) {
      this.paused = true;
      this.stream.pause();
    }
  }

  onEnd(): void {
    if (this.failure) return;
    if (this.reader.hasPartialFrame) return this.fail(new ConnectError("agent stream ended inside a message", Code.InvalidArgument));
    this.inputEnded = true;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.resolve({ done: true, value: undefined });
    // An idle agent that ends its stream withdraws its tunnel.
    if (this.tunnel && !this.tunnel.isTaken) this.tunnel.close();
  }

  /** The stream closed (agent gone, reset), whether or not its request side had ended. */
  onClose(): void {
    const reason = new ConnectError("agent stream closed", Code.Canceled);
    if (!this.inputEnded) this.fail(reason);
    this.end(reason);
  }

  private deliver(message: ConnectRequest): void {
    if (this.limitAfterDescriptor !== undefined) {
      // The first message (the descriptor) is in; the stream stays paused until it is taken.
      this.reader.maxMessageBytes = this.limitAfterDescriptor;
      this.limitAfterDescriptor = undefined;
    }
    const tunnel = this.tunnel;
    if (tunnel && !tunnel.isTaken) {
      // An idle agent must send nothing.
      tunnel.close(new ConnectError(`tunnel protocol violation: ${message.msg.case} before request_info`, Code.InvalidArgument));
      return;
    }
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = undefined;
      waiter.resolve({ done: false, value: message });
    } else {
      (this.queue ??= []).push(message);
    }
  }

  private fail(error: ConnectError): void {
    if (this.failure) return;
    this.failure = error;
    this.queue = undefined;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(error);
    if (this.tunnel && !this.tunnel.isTaken) this.tunnel.close(error);
  }
}
