import type http2 from "node:http2";
import { fromBinary, toBinary, type DescMessage, type DescMethodServerStreaming, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { AgentInfo } from "../platform-client/platform-client.js";
import { drained } from "../util/drained.js";
import { FrameReader } from "./grpc-frames.js";
import { writeGrpcFrame } from "./grpc-message-writes.js";
import { deadlineTimer } from "../util/timers.js";
import { tokenRevokedError, type AgentAuthenticator } from "../kas/agent-authenticator.js";
import { grpcStatusHeaders } from "./grpc-status-headers.js";
import { DEFAULT_MAX_MESSAGE_BYTES } from "./limits.js";
import { handlerError, kasShuttingDownError } from "./status-errors.js";
import { parseGrpcTimeout } from "./grpc-timeout.js";

/**
 * Building blocks for agent API methods served over gRPC directly on the raw HTTP/2 stream (the
 * agent API listener's `streamHandler`), ahead of Node's compatibility layer and connect-es. They
 * exist for long-lived, mostly idle streams that every agent holds (tunnels, GetConfiguration):
 * connect-es keeps a promise chain, queues and closures per open call (tens of KiB); here an idle
 * stream is one small object with listeners shared by all streams.
 */

/** Handles one HTTP/2 stream of its method; false passes the stream on (e.g. to connect-es). */
export type RawStreamHandler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => boolean;

/** A gRPC method served on raw HTTP/2 streams: `path` is `/<service>/<method>`. */
export interface RawGrpcMethod {
  readonly path: string;
  readonly handle: RawStreamHandler;
}

/**
 * One stream handler for several raw methods, chosen by `:path` (one map lookup per stream);
 * streams of other paths, and those a method declines, are passed on (false).
 */
export function rawGrpcMethods(methods: readonly RawGrpcMethod[]): RawStreamHandler {
  const byPath = new Map<string, RawStreamHandler>();
  for (const method of methods) {
    if (byPath.has(method.path)) throw new Error(`two raw handlers for ${method.path}`);
    byPath.set(method.path, method.handle);
  }
  return (stream, headers) => {
    const path = headers[":path"];
    const handle = path === undefined ? undefined : byPath.get(path);
    return handle ? handle(stream, headers) : false;
  };
}

/** A gRPC request over HTTP/2 for `path` (Connect and gRPC-web requests are not). */
export function isGrpcRequest(headers: http2.IncomingHttpHeaders, path: string): boolean {
  if (headers[":method"] !== "POST" || headers[":path"] !== path) return false;
  const contentType = headers["content-type"];
  return contentType === "application/grpc" || contentType === "application/grpc+proto";
}

export function firstHeader(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** What the authenticator reads of a raw request: only its bearer token. */
export function authorizationHeader(headers: http2.IncomingHttpHeaders): Headers {
  const header = new Headers();
  const authorization = firstHeader(headers.authorization);
  if (authorization !== undefined) header.set("authorization", authorization);
  return header;
}

/** A reader of the request's gRPC frames, honouring its grpc-encoding (throws UNIMPLEMENTED for others). */
export function requestFrameReader(headers: http2.IncomingHttpHeaders, maxMessageBytes: number): FrameReader {
  return new FrameReader(maxMessageBytes, firstHeader(headers["grpc-encoding"]) ?? "identity");
}

/** The request's `grpc-timeout` in ms, if any. */
export function requestTimeoutMs(headers: http2.IncomingHttpHeaders): number | undefined {
  return parseGrpcTimeout(firstHeader(headers["grpc-timeout"]) ?? null);
}

const resolved = Promise.resolve();
const responseHead = { ":status": 200, "content-type": "application/grpc", "grpc-accept-encoding": "gzip" };

/**
 * Writes one length-prefixed message in one piece (sending the response headers first if needed),
 * so that a reset (`resetAfterMessages`) never cuts it. Resolves at once, or when the stream drains
 * (backpressure) or closes. Throws if the stream was reset.
 */
export function writeGrpcMessage(stream: http2.ServerHttp2Stream, bytes: Uint8Array): Promise<void> {
  if (!stream.headersSent) stream.respond(responseHead, { waitForTrailers: true });
  return writeGrpcFrame(stream, bytes) ? resolved : drained(stream);
}

/**
 * Sends the status trailers (after headers, even when no message was sent) and ends our side of
 * the stream. The client ends its side once it has the status (gRPC clients do); a RST_STREAM sent
 * right after the trailers would overtake them.
 */
export function endGrpcResponse(stream: http2.ServerHttp2Stream, error: ConnectError | undefined): void {
  if (stream.destroyed || stream.closed || stream.writableEnded) return;
  if (!stream.headersSent) stream.respond(responseHead, { waitForTrailers: true });
  const trailers = grpcStatusHeaders(error);
  stream.once("wantTrailers", () => {
    try {
      stream.sendTrailers(trailers);
    } catch {
      // The stream was reset meanwhile.
    }
  });
  stream.end();
}

/** A stream that {@link AgentStreamGroups} can end (revocation, shutdown). */
export interface AgentStreamMember {
  group: TokenGroup | undefined;
  end(reason: unknown): void;
}

/** The open streams of one agent token: one revocation listener for all of them. */
export interface TokenGroup {
  readonly tokenId: number | undefined;
  readonly members: Set<AgentStreamMember>;
  stopWatching: () => void;
  revoked: boolean;
}

/**
 * The authenticated streams of one method, grouped by token: a revocation ends the token's streams
 * (one listener per token, not per stream) and KAS shutdown ends them all (one listener).
 */
export class AgentStreamGroups {
  private readonly groups = new Map<number | undefined, TokenGroup>();

  constructor(
    private readonly auth: AgentAuthenticator,
    private readonly shutdownSignal: AbortSignal,
    shutdownReason?: () => unknown,
  ) {
    if (!shutdownSignal.aborted) {
      shutdownSignal.addEventListener(
        "abort",
        () => {
          const reason = shutdownReason ? shutdownReason() : shutdownSignal.reason;
          for (const group of [...this.groups.values()]) for (const member of [...group.members]) member.end(reason);
        },
        { once: true },
      );
    }
  }

  /** Adds an authenticated stream; ends it at once when KAS is shutting down or the token is revoked. */
  join(member: AgentStreamMember, info: AgentInfo): void {
    if (this.shutdownSignal.aborted) return member.end(this.shutdownSignal.reason);
    const tokenId = info.tokenId;
    let group = this.groups.get(tokenId);
    if (!group) {
      const created: TokenGroup = { tokenId, members: new Set(), stopWatching: noop, revoked: false };
      const stop = this.auth.onRevoked(info, (reason) => {
        created.revoked = true;
        if (this.groups.get(tokenId) === created) this.groups.delete(tokenId);
        for (const revoked of [...created.members]) revoked.end(reason);
      });
      if (!stop) return member.end(tokenRevokedError());
      created.stopWatching = stop;
      this.groups.set(tokenId, created);
      group = created;
    }
    group.members.add(member);
    member.group = group;
  }

  /** Forgets a stream. Idempotent. */
  leave(member: AgentStreamMember): void {
    const group = member.group;
    if (!group) return;
    member.group = undefined;
    group.members.delete(member);
    if (group.members.size === 0 && !group.revoked && this.groups.get(group.tokenId) === group) {
      this.groups.delete(group.tokenId);
      group.stopWatching();
    }
  }
}

function noop(): void {}

function ignore(): void {}

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
      stream.on("error", ignore);
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

/** What serves a raw HTTP/2 stream: gets its request bytes, its end and its close. */
export interface RawStreamOwner {
  onData(chunk: Buffer): void;
  onEnd(): void;
  /** The stream closed (client gone, reset, session closed), whether or not its request had ended. */
  onClose(): void;
}

const kOwner = Symbol("kasbridge.rawStreamOwner");
type OwnedHttp2Stream = http2.ServerHttp2Stream & { [kOwner]?: RawStreamOwner };

// Listeners shared by every raw stream: an idle stream holds no closures of its own.
function onOwnedData(this: OwnedHttp2Stream, chunk: Buffer): void {
  this[kOwner]?.onData(chunk);
}
function onOwnedEnd(this: OwnedHttp2Stream): void {
  this[kOwner]?.onEnd();
}
function onOwnedClose(this: OwnedHttp2Stream): void {
  this[kOwner]?.onClose();
}

/** Routes the stream's events to `owner` through listeners shared by all streams. */
export function attachRawStream(stream: http2.ServerHttp2Stream, owner: RawStreamOwner): void {
  (stream as OwnedHttp2Stream)[kOwner] = owner;
  // Stream errors surface as "close".
  stream.on("error", ignore);
  stream.on("data", onOwnedData);
  stream.on("end", onOwnedEnd);
  stream.on("close", onOwnedClose);
}

/** Undoes {@link attachRawStream}; later request data is read and dropped so the stream can finish. */
export function detachRawStream(stream: http2.ServerHttp2Stream): void {
  stream.off("data", onOwnedData);
  stream.off("end", onOwnedEnd);
  stream.off("close", onOwnedClose);
  (stream as OwnedHttp2Stream)[kOwner] = undefined;
  stream.resume();
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
