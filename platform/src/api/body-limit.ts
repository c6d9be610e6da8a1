/**
 * Request body limits of the platform's HTTP port (REST API, internal API, git), with one wording
 * for every refusal: 413 naming the limit and the setting that raises it.
 */
import { Transform, type TransformCallback } from "node:stream";
import type { RequestHandler } from "express";
import { LINGER_MAX_BYTES } from "@kasbridge/sdk/util";

/** A body limit and the name of the setting that sets it, as the operator knows it. */
export interface BodyLimit {
  maxBytes: number;
  /** E.g. "max_request_body_bytes (KAS_MAX_REQUEST_BODY_BYTES)". */
  setting: string;
}

/** "the request body is larger than 1048576 bytes, the limit set by max_request_body_bytes (…)" */
export function bodyTooLargeMessage(limit: BodyLimit, what = "the request body"): string {
  return `${what} is larger than ${limit.maxBytes} bytes, the limit set by ${limit.setting}`;
}

/** A request body that went over its limit (raised by limitBody). */
export class BodyTooLargeError extends Error {
  override readonly name = "BodyTooLargeError";
  constructor(readonly limit: BodyLimit) {
    super(bodyTooLargeMessage(limit));
  }
}

/** The declared Content-Length when it is over the limit (the body need not be read to refuse it). */
export function declaredLengthExceeds(contentLength: string | undefined, limit: BodyLimit): boolean {
  return contentLength !== undefined && /^\d+$/.test(contentLength) && Number(contentLength) > limit.maxBytes;
}

/** Passes bytes through and fails with BodyTooLargeError once more than `limit.maxBytes` went by. */
export function limitBody(limit: BodyLimit): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      seen += chunk.length;
      if (seen > limit.maxBytes) callback(new BodyTooLargeError(limit));
      else callback(null, chunk);
    },
  });
}

// Shared with the agent API, which refuses bodies before authentication.
export { LINGER_MAX_BYTES, LINGER_MAX_MS, drainRefusedBody } from "@kasbridge/sdk/util";

/**
 * Express middleware to put before the body parsers: refuses a declared Content-Length over the
 * limit at once (BodyTooLargeError, for the error handler), and disconnects a client whose body
 * goes on well past the limit (the parsers read off a refused body before answering, unbounded).
 */
export function guardRequestBody(limit: BodyLimit): RequestHandler {
  return (req, _res, next) => {
    if (declaredLengthExceeds(req.get("content-length"), limit)) throw new BodyTooLargeError(limit);
    if (req.get("content-length") === undefined && req.get("transfer-encoding") === undefined) {
      next(); // no body
      return;
    }
    let seen = 0;
    const count = (chunk: Buffer) => {
      seen += chunk.length;
      if (seen > limit.maxBytes + LINGER_MAX_BYTES) {
        req.off("data", count);
        req.socket.destroy();
      }
    };
    req.on("data", count);
    req.once("end", () => req.off("data", count));
    next();
  };
}
