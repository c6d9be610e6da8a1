import type { ErrorRequestHandler } from "express";
import type { Logger } from "pino";
import { ServiceError } from "../services/errors.js";
import { isDatabaseUnavailable } from "../store/db-util.js";
import { BodyTooLargeError, bodyTooLargeMessage, drainRefusedBody, type BodyLimit } from "./body-limit.js";

/** An HTTP error with a GitLab-shaped JSON body. */
export class HttpError extends Error {
  override readonly name = "HttpError";
  constructor(
    readonly status: number,
    readonly body: Record<string, unknown>,
  ) {
    super(typeof body.message === "string" ? body.message : `HTTP ${status}`);
  }
}

export const unauthorized = () => new HttpError(401, { message: "401 Unauthorized" });
export const forbidden = () => new HttpError(403, { message: "403 Forbidden" });
/** GitLab's `not_found!(resource)`: "404 Project Not Found"; without a resource "404 Not found". */
export const notFound = (resource?: string) =>
  new HttpError(404, { message: resource ? `404 ${resource} Not Found` : "404 Not found" });
export const badRequest = (reason: string) => new HttpError(400, { message: `400 Bad request - ${reason}` });
/**
 * Parameter validation failures. GitLab (Grape) answers `{"error": "name is missing"}`; we also set
 * `message` so clients that only read `message` see it too.
 */
export const paramError = (text: string) => new HttpError(400, { error: text, message: `400 Bad request - ${text}` });
export const conflict = (message: string) => new HttpError(409, { message });

export function fromServiceError(err: ServiceError): HttpError {
  switch (err.kind) {
    case "invalid":
      return badRequest(err.message);
    case "not_found":
      return new HttpError(404, { message: `404 ${err.message}` });
    case "conflict":
      return conflict(err.message);
    case "forbidden":
      return forbidden();
  }
}

/**
 * Renders every error as GitLab-style JSON. Unexpected errors are logged (never with request
 * headers, which carry tokens) and answered with a bare 500. A body over `bodyLimit` is a 413
 * naming the limit and its setting (what the client still sends is read off, within bounds).
 */
export function jsonErrorHandler(logger: Logger, bodyLimit?: BodyLimit): ErrorRequestHandler {
  return (err: unknown, req, res, next) => {
    if (res.headersSent) {
      next(err);
      return;
    }
    let httpError: HttpError;
    if (err instanceof HttpError) {
      httpError = err;
    } else if (err instanceof ServiceError) {
      httpError = fromServiceError(err);
    } else if (err instanceof BodyTooLargeError) {
      httpError = new HttpError(413, { message: `413 Request Entity Too Large - ${bodyTooLargeMessage(err.limit)}` });
    } else if (isBodyParserError(err)) {
      if (err.type === "entity.parse.failed") {
        httpError = badRequest("malformed JSON body");
      } else if (err.type === "entity.too.large") {
        const limit = bodyLimit ?? { maxBytes: Number(err.limit), setting: "the server's request body limit" };
        httpError = new HttpError(413, { message: `413 Request Entity Too Large - ${bodyTooLargeMessage(limit)}` });
      } else {
        httpError = new HttpError(err.status, { message: `${err.status} ${err.expose ? err.message : "Bad request"}` });
      }
    } else if (isDatabaseUnavailable(err)) {
      // The pool reconnects by itself; each request in the meantime gets this, without a stack trace.
      logger.warn({ method: req.method, path: req.path, err: (err as Error).message }, "platform API request failed: the database is unavailable");
      httpError = new HttpError(503, { message: "503 Service Unavailable - the database is unavailable" });
    } else {
      logger.error({ err, method: req.method, path: req.path }, "platform API request failed");
      httpError = new HttpError(500, { message: "500 Internal Server Error" });
    }
    res.status(httpError.status).json(httpError.body);
    if (httpError.status === 413) drainRefusedBody(req);
  };
}

function isBodyParserError(err: unknown): err is { type: string; status: number; expose: boolean; message: string; limit?: unknown } {
  const e = err as { type?: unknown; status?: unknown } | null;
  return typeof e?.type === "string" && typeof e.status === "number" && e.status >= 400 && e.status < 500;
}
