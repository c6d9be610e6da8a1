import type http2 from "node:http2";
import { fromBinary, toBinary, type DescMessage, type DescMethodServerStreaming, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { AgentInfo } from "../platform-client/platform-client.js";
import type { FrameReader } from "../grpc/grpc-frames.js";
import { DEFAULT_MAX_MESSAGE_BYTES } from "../grpc/limits.js";
import { isGrpcRequest, type RawGrpcMethod } from "../grpc/raw-dispatch.js";
import {
  attachRawStream,
  authorizationHeader,
  detachRawStream,
  endGrpcResponse,
  requestFrameReader,
  requestTimeoutMs,
  writeGrpcMessage,
  type RawStreamOwner,
} from "../grpc/raw-wire.js";
import { handlerError, kasShuttingDownError } from "../grpc/status-errors.js";
import { deadlineTimer } from "../util/timers.js";
import type { AgentAuthenticator } from "./agent-authenticator.js";
import { AgentStreamGroups, type AgentStreamMember, type TokenGroup } from "./agent-stream-groups.js";

// Server-streaming methods of the agent API on raw HTTP/2 streams (GetConfiguration): one request
// message, the agent authenticated, then responses until the handler, the agent, a revocation or
// KAS ends the call.

/**
 * The handler of a raw server-streaming method. Its functions are shared by all calls; what one
 * call needs to remember goes in `call.state`, so an idle call holds no closure or promise.
 */
export interface RawServerStreamHandler<I extends DescMessage, O extends DescMessage, S> {
  /** An authenticated call with its one request message. May send now or later; ends with `call.finish`. */
  start(call: RawServerStreamCall<O, S>, request: MessageShape<I>): void;
  /**
   * The call has ended, whatever ended it (finish, client cancel or reset, session closed, token
   * revoked, KAS shutdown, grpc-timeout); `call.endError` says how. Called once per started call.
   */
  ended?(call: RawServerStreamCall<O, S>): void;
}

export interface RawServerStreamOptions<I extends DescMessage, O extends DescMessage, S> {
  method: DescMethodServerStreaming<I, O>;
  handler: RawServerStreamHandler<I, O, S>;
  auth: AgentAuthenticator;
  /** Ends every call with UNAVAILABLE "KAS is shutting down". */
  shutdownSignal: AbortSignal;
  /** Largest request and response message in bytes. Default 16 MiB; larger: RESOURCE_EXHAUSTED. */
  maxMessageBytes?: number;
  /**
   * Largest request message, read while the agent is still being authenticated. Default:
   * `maxMessageBytes`; set it lower when requests are small, so strangers cannot make KAS buffer
   * large messages.
   */
  maxRequestBytes?: number;
}

/**
 * A server-streaming gRPC method of the agent API served on raw HTTP/2 streams: reads the one
 * request message (gzip, size limit, grpc-timeout), authenticates the agent's token, then hands
 * the call to `handler`. Revocation of the token, KAS shutdown, the client cancelling or
 * resetting, the session closing and the deadline all end the call. Errors end it with their gRPC
 * status in the trailers, as connect-es does. Declines Connect and gRPC-web requests (false).
 */
export function rawServerStreamingMethod<I extends DescMessage, O extends DescMessage, S = undefined>(
  options: RawServerStreamOptions<I, O, S>,
): RawGrpcMethod {
  const path = `/${options.method.parent.typeName}/${options.method.name}`;
  const server = new RawServerStreams(options, path);
  return {
    path,
    handle(stream, headers) {
      if (!isGrpcRequest(headers, path)) return false;
      server.serve(stream, headers);
      return true;
    },
  };
}

class RawServerStreams<I extends DescMessage, O extends DescMessage, S> {
  readonly groups: AgentStreamGroups;
  readonly maxMessageBytes: number;
  readonly maxRequestBytes: number;

  constructor(
    readonly options: RawServerStreamOptions<I, O, S>,
    readonly path: string,
  ) {
    this.groups = new AgentStreamGroups(options.auth, options.shutdownSignal, kasShuttingDownError);
    this.maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    this.maxRequestBytes = Math.min(options.maxRequestBytes ?? this.maxMessageBytes, this.maxMessageBytes);
  }

  serve(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    let reader: FrameReader;
    try {
      reader = requestFrameReader(headers, this.maxRequestBytes);
    } catch (error) {
      stream.on("error", () => {});
      stream.resume();
      return endGrpcResponse(stream, ConnectError.from(error));
    }
    const call = new RawServerStreamCall<O, S>(this as RawServerStreams<DescMessage, O, S>, stream, reader, authorizationHeader(headers));
    const timeoutMs = requestTimeoutMs(headers);
    if (timeoutMs !== undefined) call.endAfter(timeoutMs);
  }

  /** The request has arrived in full: authenticate, then start the handler. */
  async open(call: RawServerStreamCall<O, S>, bytes: Uint8Array, authorization: Headers): Promise<void> {
    let request: MessageShape<I>;
    try {
      request = fromBinary(this.options.method.input, bytes);
    } catch (error) {
      return call.finish(new ConnectError(`parse binary: ${error instanceof Error ? error.message : String(error)}`, Code.Internal));
    }
    let info: AgentInfo;
    try {
      info = await this.options.auth.authenticate(authorization);
    } catch (error) {
      return call.finish(ConnectError.from(error));
    }
    if (call.isEnded) return;
    call.agent = info;
    this.groups.join(call, info);
    if (call.isEnded) return;
    call.started = true;
    try {
      this.options.handler.start(call, request);
    } catch (error) {
      call.finish(handlerError(error));
    }
  }

  ended(call: RawServerStreamCall<O, S>): void {
    this.groups.leave(call);
    if (call.started) this.options.handler.ended?.(call);
  }
}

/** One call of a {@link rawServerStreamingMethod}, from its request to its status. */
export class RawServerStreamCall<O extends DescMessage, S = unknown> implements AgentStreamMember, RawStreamOwner {
  group: TokenGroup | undefined;
  /** The authenticated agent (set before `start`). */
  agent!: AgentInfo;
  /** The handler's per-call data. */
  state: S | undefined;
  /** Whether the handler was started. */
  started = false;
  private ended = false;
  private error: ConnectError | undefined;
  private reader: FrameReader | undefined;
  private request: Uint8Array | undefined;
  private authorization: Headers | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly server: RawServerStreams<DescMessage, O, S>,
    private readonly stream: http2.ServerHttp2Stream,
    reader: FrameReader,
    authorization: Headers,
  ) {
    this.reader = reader;
    this.authorization = authorization;
    attachRawStream(stream, this);
  }

  get isEnded(): boolean {
    return this.ended;
  }

  /** Why the call ended (undefined: OK, or not ended yet). */
  get endError(): ConnectError | undefined {
    return this.error;
  }

  /** Sends a response message; resolves when it can take more (backpressure). Rejects once the call has ended. */
  send(message: MessageShape<O>): Promise<void> {
    const stream = this.stream;
    if (this.ended || stream.destroyed || stream.writableEnded) {
      return Promise.reject(this.error ?? new ConnectError("call ended", Code.Canceled));
    }
    const bytes = toBinary(this.server.options.method.output, message);
    if (bytes.byteLength > this.server.maxMessageBytes) {
      const error = new ConnectError(
        `message size ${bytes.byteLength} is larger than configured writeMaxBytes ${this.server.maxMessageBytes}`,
        Code.ResourceExhausted,
      );
      this.finish(error);
      return Promise.reject(error);
    }
    try {
      return writeGrpcMessage(stream, bytes);
    } catch (error) {
      // respond() throws on a stream reset since the check above.
      const reason = ConnectError.from(error, Code.Unavailable);
      this.end(reason);
      return Promise.reject(reason);
    }
  }

  /** Ends the call with `error`'s status, or OK. Idempotent. */
  finish(error?: ConnectError): void {
    if (this.ended) return;
    this.ended = true;
    this.error = error;
    clearTimeout(this.timer);
    this.reader = undefined;
    this.request = undefined;
    this.authorization = undefined;
    detachRawStream(this.stream);
    endGrpcResponse(this.stream, error);
    this.server.ended(this);
  }

  /** Ends the call for `reason` (revocation, shutdown, cancellation, deadline). */
  end(reason: unknown): void {
    this.finish(ConnectError.from(reason ?? new ConnectError("call cancelled", Code.Canceled)));
  }

  endAfter(timeoutMs: number): void {
    this.timer = deadlineTimer(timeoutMs, () => this.end(new ConnectError("the operation timed out", Code.DeadlineExceeded)));
  }

  onClose(): void {
    this.end(new ConnectError("client stream closed", Code.Canceled));
  }

  onData(chunk: Buffer): void {
    const reader = this.reader;
    if (!reader) return;
    let frames: Uint8Array[];
    try {
      frames = reader.push(chunk);
    } catch (error) {
      return this.finish(ConnectError.from(error));
    }
    for (const frame of frames) {
      if (this.request) return this.finish(extraInput());
      this.request = frame;
    }
  }

  onEnd(): void {
    const reader = this.reader;
    if (!reader) return;
    this.reader = undefined;
    if (reader.hasPartialFrame) return this.finish(new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument));
    const request = this.request;
    const authorization = this.authorization!;
    this.request = undefined;
    this.authorization = undefined;
    if (!request) {
      return this.finish(new ConnectError("protocol error: missing input message for server_streaming method", Code.Unimplemented));
    }
    void this.server.open(this, request, authorization);
  }
}

function extraInput(): ConnectError {
  return new ConnectError("protocol error: received extra input message for server_streaming method", Code.Unimplemented);
}
