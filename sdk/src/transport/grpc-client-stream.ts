import http2 from "node:http2";
import { gzipSync } from "node:zlib";
import { Code, ConnectError } from "@connectrpc/connect";
import { codeFromHttpStatus, findTrailerError } from "@connectrpc/connect/protocol-grpc";
import { drained } from "../util/drained.js";
import { FrameReader } from "../grpc/grpc-frames.js";
import { resetAfterMessages, writeGrpcFrame } from "../grpc/grpc-message-writes.js";
import { MessageInbox } from "../util/message-inbox.js";
import { nodeHeadersToHeaders } from "../util/metadata.js";
import { deadlineTimer } from "../util/timers.js";
import { connectionErrorToUnavailable } from "./connection-error.js";

/** How one {@link GrpcClientStream} encodes, decodes and bounds its messages. */
export interface GrpcClientStreamOptions<I, O> {
  encode(message: I): Uint8Array;
  decode(bytes: Uint8Array): O;
  /** Largest response message accepted (RESOURCE_EXHAUSTED beyond it, checked before buffering). */
  readMaxBytes: number;
  /** Largest request message sent (RESOURCE_EXHAUSTED beyond it). */
  writeMaxBytes: number;
  /** Request messages of at least this many bytes are gzipped; undefined sends them uncompressed. */
  gzipMinBytes?: number;
  /** Cancels the call with DEADLINE_EXCEEDED after this long (also sent as `grpc-timeout`). */
  timeoutMs?: number;
  /** Called whenever response bytes arrive (the session's keepalive bookkeeping). */
  onRead?(stream: http2.ClientHttp2Stream): void;
}

const resolved: Promise<void> = Promise.resolve();

/**
 * One gRPC call (any streaming kind) on a raw HTTP/2 client stream, framed by hand: 5-byte length
 * prefixes, identity or gzip, status from `grpc-status`/`grpc-message`/`grpc-status-details-bin`
 * trailers (or a trailers-only response). Much cheaper per call than a connect-es client; used for
 * the agent's tunnel streams, one per request.
 *
 * Reading is the iterator (`next()`): responses in order, then done on status OK, or a rejection with
 * the call's ConnectError. Writing is `send()`, which resolves when more may be sent (HTTP/2
 * backpressure), and `closeSend()`. `cancel()` ends the call from our side (RST_STREAM CANCEL for
 * Canceled, INTERNAL_ERROR otherwise, as gRPC maps them), once the messages already written have
 * gone out: a reset inside a message would reach the server as a truncated message.
 */
export class GrpcClientStream<I, O> implements AsyncIterator<O, undefined> {
  private stream: http2.ClientHttp2Stream | undefined;
  private readonly opening: Promise<void>;
  private reader: FrameReader | undefined;
  /** Decoded responses; the HTTP/2 stream is paused while a few wait (flow control holds the server). */
  private readonly inbox = new MessageInbox<O>();
  private status: http2.IncomingHttpHeaders | undefined;
  private failure: ConnectError | undefined;
  private sendClosed = false;
  private timer: NodeJS.Timeout | undefined;

  /** @param open the HTTP/2 stream, as the session manager hands it out (headers already sent). */
  constructor(
    open: Promise<http2.ClientHttp2Stream>,
    private readonly options: GrpcClientStreamOptions<I, O>,
  ) {
    if (options.timeoutMs !== undefined) {
      this.timer = deadlineTimer(options.timeoutMs, () => this.cancel(new ConnectError("the operation timed out", Code.DeadlineExceeded)));
    }
    this.opening = open.then(
      (stream) => this.attach(stream),
      (error: unknown) => this.fail(ConnectError.from(connectionErrorToUnavailable(error))),
    );
  }

  /** The request headers a gRPC call with these options sends (besides `:method`/`:path`). */
  static requestHeaders(options: { gzipMinBytes?: number; timeoutMs?: number }): http2.OutgoingHttpHeaders {
    const headers: http2.OutgoingHttpHeaders = {
      "content-type": "application/grpc+proto",
      te: "trailers",
      "grpc-accept-encoding": "gzip",
    };
    if (options.gzipMinBytes !== undefined) headers["grpc-encoding"] = "gzip";
    if (options.timeoutMs !== undefined) headers["grpc-timeout"] = `${options.timeoutMs}m`;
    return headers;
  }

  /** Whether the call has ended (status received, failed or cancelled). */
  get isFinished(): boolean {
    return this.inbox.isSettled;
  }

  /** Whether `send()` would be refused (request side closed, or the call ended). */
  get isSendClosed(): boolean {
    return this.sendClosed || this.failure !== undefined;
  }

  /** Sends one message; resolves when the stream takes more. Rejects once the call has ended. */
  send(message: I): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.sendClosed) return Promise.reject(new ConnectError("send after the request stream was closed", Code.Internal));
    // Sends made before the stream is open go out in order, ahead of an earlier closeSend().
    if (!this.stream) return this.opening.then(() => this.write(message));
    return this.write(message);
  }

  private write(message: I): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    const stream = this.stream!;
    if (stream.destroyed || stream.writableEnded) {
      return Promise.reject(this.failure ?? new ConnectError("the stream was closed", Code.Canceled));
    }
    let bytes = this.options.encode(message);
    if (bytes.byteLength > this.options.writeMaxBytes) {
      return Promise.reject(
        new ConnectError(`message size ${bytes.byteLength} is larger than configured writeMaxBytes ${this.options.writeMaxBytes}`, Code.ResourceExhausted),
      );
    }
    const gzip = this.options.gzipMinBytes !== undefined && bytes.byteLength >= this.options.gzipMinBytes;
    if (gzip) bytes = gzipSync(bytes);
    if (writeGrpcFrame(stream, bytes, gzip)) return resolved;
    return drained(stream).then(() => {
      if (this.failure) throw this.failure;
    });
  }

  /** Ends the request side (END_STREAM); responses keep coming. Idempotent. */
  closeSend(): void {
    if (this.sendClosed) return;
    this.sendClosed = true;
    if (this.stream) endWritable(this.stream);
    else void this.opening.then(() => this.stream && endWritable(this.stream));
  }

  /** Ends the call from our side; a pending and later `next()` rejects with `reason`. Idempotent. */
  cancel(reason: ConnectError): void {
    this.fail(reason, true);
  }

  next(): Promise<IteratorResult<O, undefined>> {
    return this.inbox.next();
  }

  async return(): Promise<IteratorResult<O, undefined>> {
    this.cancel(new ConnectError("the response stream was abandoned", Code.Canceled));
    return { done: true, value: undefined };
  }

  private attach(stream: http2.ClientHttp2Stream): void {
    this.stream = stream;
    this.inbox.source = stream;
    if (this.failure) {
      // Cancelled (or timed out) while the stream was being opened.
      stream.close(rstCodeFor(this.failure));
      return;
    }
    // Node emits "response" on the next tick, after DATA that came in the same read; reading starts
    // with the response headers, so no data is seen before them.
    stream.once("response", this.onResponse);
    stream.once("trailers", this.onTrailers);
    stream.once("end", this.onEnd);
    stream.once("close", this.onClose);
    stream.on("error", this.onError);
  }

  private readonly onResponse = (headers: http2.IncomingHttpHeaders) => {
    const status = Number(headers[":status"]);
    if (status !== 200) {
      return this.fail(new ConnectError(`HTTP ${status}`, codeFromHttpStatus(status)));
    }
    const contentType = headers["content-type"] ?? "";
    if (!contentType.startsWith("application/grpc")) {
      return this.fail(new ConnectError(`unexpected response content-type "${contentType}"`, Code.Internal));
    }
    // A trailers-only response carries the status in the headers.
    if (headers["grpc-status"] !== undefined) this.status = headers;
    try {
      this.reader = new FrameReader(this.options.readMaxBytes, firstValue(headers["grpc-encoding"]) ?? "identity");
    } catch (error) {
      return this.fail(ConnectError.from(error));
    }
    this.stream!.on("data", this.onData);
  };

  private readonly onData = (chunk: Buffer) => {
    if (this.isFinished) return;
    this.options.onRead?.(this.stream!);
    try {
      for (const frame of this.reader!.push(chunk)) {
        let message: O;
        try {
          message = this.options.decode(frame);
        } catch (error) {
          throw new ConnectError(`invalid response message: ${(error as Error).message}`, Code.Internal);
        }
        this.inbox.deliver(message);
      }
    } catch (error) {
      this.fail(ConnectError.from(error));
    }
  };

  private readonly onTrailers = (trailers: http2.IncomingHttpHeaders) => {
    this.status = trailers;
  };

  private readonly onEnd = () => {
    if (this.isFinished) return;
    if (this.reader?.hasPartialFrame) return this.fail(new ConnectError("response ended inside a message", Code.Internal));
    this.finish();
  };

  private readonly onClose = () => {
    if (this.isFinished) return this.cleanup();
    // A server that has sent its status may reset the rest of the stream (RST_STREAM NO_ERROR).
    if (this.status && !this.reader?.hasPartialFrame) return this.finish();
    this.fail(
      errorFromRstCode(this.stream!.rstCode) ?? new ConnectError("the stream closed without a gRPC status", Code.Internal),
    );
  };

  private readonly onError = (error: Error) => {
    // A lost connection (marked by the transport, also as the cause) is Unavailable; the session
    // manager reports it as a ConnectError itself. Node's other stream errors carry the reset code.
    const unavailable = connectionErrorToUnavailable(error);
    if (unavailable !== error || error instanceof ConnectError) return this.fail(ConnectError.from(unavailable));
    this.fail(errorFromRstCode(this.stream!.rstCode) ?? ConnectError.from(error));
  };

  /** The response is complete: OK ends the iterator, any other status fails it. */
  private finish(): void {
    const status = this.status;
    if (!status) return this.fail(new ConnectError("missing gRPC status trailers", Code.Internal));
    if (status["grpc-status"] !== "0") {
      const error = findTrailerError(nodeHeadersToHeaders(status)) ?? new ConnectError("invalid grpc-status", Code.Internal);
      return this.fail(error, false, true);
    }
    this.cleanup();
    this.inbox.end();
  }

  /**
   * Ends the call with `error` (after the responses already received, unless `discard`). When the
   * server has ended the stream with its status, our side ends with END_STREAM, not a reset: a Node
   * (nghttp2) server counts every RST_STREAM it receives against its rapid-reset limit (a burst of
   * about 1,000, then 33 per second) and then refuses new streams with ENHANCE_YOUR_CALM, so a reset
   * per failed call (e.g. every call its caller cancelled) cut the agent off from KAS.
   */
  private fail(error: ConnectError, discard = false, serverEnded = false): void {
    if (this.isFinished) return;
    this.failure = error;
    this.cleanup();
    const stream = this.stream;
    if (stream && !stream.closed) {
      if (serverEnded) endWritable(stream);
      // After the messages already written: a reset that cuts one reads as a truncated message.
      else resetAfterMessages(stream, rstCodeFor(error));
    }
    this.inbox.fail(error, discard);
  }

  private cleanup(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/** Ends our side of a stream unless it is already ended, reset or gone. */
function endWritable(stream: http2.ClientHttp2Stream): void {
  if (!stream.destroyed && !stream.closed && !stream.writableEnded) stream.end();
}

function firstValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** The RST_STREAM code for ending a call with `error` (gRPC's HTTP/2 mapping, as connect-node). */
function rstCodeFor(error: ConnectError): number {
  return error.code === Code.Canceled ? http2.constants.NGHTTP2_CANCEL : http2.constants.NGHTTP2_INTERNAL_ERROR;
}

/** The error a stream reset by the peer means, per gRPC's HTTP/2 mapping (none for NO_ERROR). */
function errorFromRstCode(rstCode: number | undefined): ConnectError | undefined {
  const c = http2.constants;
  let code: Code;
  switch (rstCode) {
    case undefined:
    case c.NGHTTP2_NO_ERROR:
    case c.NGHTTP2_STREAM_CLOSED:
      return undefined;
    case c.NGHTTP2_REFUSED_STREAM:
      code = Code.Unavailable;
      break;
    case c.NGHTTP2_CANCEL:
      code = Code.Canceled;
      break;
    case c.NGHTTP2_ENHANCE_YOUR_CALM:
      code = Code.ResourceExhausted;
      break;
    case c.NGHTTP2_INADEQUATE_SECURITY:
    case c.NGHTTP2_HTTP_1_1_REQUIRED:
      code = Code.PermissionDenied;
      break;
    default:
      code = Code.Internal;
  }
  return new ConnectError(`http/2 stream closed with error code 0x${rstCode.toString(16)}`, code);
}
