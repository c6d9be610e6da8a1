import type { ServerHttp2Stream } from "node:http2";
import { create, fromBinary, toBinary, type DescMessage, type DescMethodUnary, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { FrameReader } from "./grpc-frames.js";
import { writeGrpcMessage } from "./raw-wire.js";

/**
 * A unary gRPC method KAS serves itself on its API listener (8153), next to the tunnel gateway:
 * the platform's calls to KAS (GitLab's `Notifications/GitPushEvent`, ...) rather than to an
 * agent. The gateway checks the caller's JWT first, then hands the stream over.
 */
export interface ApiUnaryMethod {
  /** `/<service>/<method>`. */
  readonly path: string;
  /**
   * Reads the one request message, runs the handler, writes the response message; resolves with
   * the error to end the call with (undefined: OK). The caller sends the status trailers.
   */
  serve(stream: ServerHttp2Stream, grpcEncoding: string, signal: AbortSignal): Promise<ConnectError | undefined>;
}

export interface ApiUnaryMethodOptions<I extends DescMessage, O extends DescMessage> {
  method: DescMethodUnary<I, O>;
  handle(request: MessageShape<I>, signal: AbortSignal): Promise<MessageInitShape<O>>;
  /** Largest request message. Default 64 KiB (platform notifications are small). */
  maxRequestBytes?: number;
}

export function apiUnaryMethod<I extends DescMessage, O extends DescMessage>(options: ApiUnaryMethodOptions<I, O>): ApiUnaryMethod {
  const maxRequestBytes = options.maxRequestBytes ?? 64 * 1024;
  return {
    path: `/${options.method.parent.typeName}/${options.method.name}`,
    async serve(stream, grpcEncoding, signal) {
      try {
        const bytes = await readOneMessage(stream, new FrameReader(maxRequestBytes, grpcEncoding));
        let request: MessageShape<I>;
        try {
          request = fromBinary(options.method.input, bytes);
        } catch (error) {
          throw new ConnectError(`parse binary: ${error instanceof Error ? error.message : String(error)}`, Code.InvalidArgument);
        }
        const response = await options.handle(request, signal);
        signal.throwIfAborted();
        await writeGrpcMessage(stream, toBinary(options.method.output, create(options.method.output, response)));
        return undefined;
      } catch (error) {
        return error instanceof ConnectError ? error : new ConnectError("internal error", Code.Internal, undefined, undefined, error);
      }
    },
  };
}

/** The request's one message: several, or none, is INVALID_ARGUMENT as in grpc-go. */
function readOneMessage(stream: ServerHttp2Stream, reader: FrameReader): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const messages: Uint8Array[] = [];
    const fail = (error: unknown) => {
      stream.off("data", onData);
      stream.resume();
      reject(error);
    };
    const onData = (chunk: Buffer) => {
      try {
        messages.push(...reader.push(chunk));
      } catch (error) {
        fail(error);
        return;
      }
      if (messages.length > 1) fail(new ConnectError("unary call with more than one request message", Code.InvalidArgument));
    };
    stream.on("data", onData);
    stream.once("end", () => {
      if (reader.hasPartialFrame) return fail(new ConnectError("request ended inside a message", Code.Internal));
      if (messages.length !== 1) return fail(new ConnectError("unary call without a request message", Code.InvalidArgument));
      resolve(messages[0]!);
    });
    stream.once("close", () => fail(new ConnectError("client went away", Code.Canceled)));
  });
}
