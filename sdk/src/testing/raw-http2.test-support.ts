// One HTTP/2 request by hand over node:http2, with whatever headers a hostile client would send.
import http2 from "node:http2";
import { HUNG_MS, within } from "./wait.test-support.js";

/** What came back on one stream. */
export interface RawHttp2Answer {
  /** The response headers (undefined: none arrived). */
  headers?: http2.IncomingHttpHeaders;
  trailers?: http2.IncomingHttpHeaders;
  body: Buffer;
  /** The stream's RST_STREAM code as the client saw it (NO_ERROR for a normal end). */
  rstCode: number;
  /** gRPC status: from the trailers, or from the headers of a trailers-only answer. */
  grpcStatus?: string;
}

/**
 * Sends one request on `session` (a URL opens a session of its own, closed afterwards) and
 * resolves when its stream has closed. Never rejects on stream errors: a reset is an answer too.
 */
export async function rawHttp2Request(
  target: string | http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  body?: Buffer | Uint8Array,
): Promise<RawHttp2Answer> {
  const session = typeof target === "string" ? http2.connect(target) : target;
  session.on("error", ignore);
  try {
    const stream = session.request(headers);
    stream.on("error", ignore);
    const answer: RawHttp2Answer = { body: Buffer.alloc(0), rstCode: 0 };
    const chunks: Buffer[] = [];
    stream.on("response", (h) => (answer.headers = h));
    stream.on("trailers", (t) => (answer.trailers = t));
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    const closed = new Promise<void>((resolve) => stream.once("close", resolve));
    stream.end(body);
    await within(HUNG_MS, closed, `${String(headers[":method"] ?? "GET")} ${String(headers[":path"] ?? "/")} to close`);
    answer.body = Buffer.concat(chunks);
    answer.rstCode = stream.rstCode ?? 0;
    const status = answer.trailers?.["grpc-status"] ?? answer.headers?.["grpc-status"];
    if (status !== undefined) answer.grpcStatus = String(status);
    return answer;
  } finally {
    if (typeof target === "string") session.close();
  }
}

function ignore(): void {}
