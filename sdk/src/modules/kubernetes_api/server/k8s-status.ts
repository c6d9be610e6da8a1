/**
 * Errors of the Kubernetes API proxy as Kubernetes `Status` objects, so kubectl prints them well
 * (GitLab KAS: message prefixed "GitLab Agent Server: ", `Gitlab-Unauthorized: true` on 401).
 */
import { Code, ConnectError } from "@connectrpc/connect";

export const STATUS_MESSAGE_PREFIX = "GitLab Agent Server: ";
/** Header GitLab KAS puts on answers that refuse the caller's credentials. */
export const GITLAB_UNAUTHORIZED_HEADER = "Gitlab-Unauthorized";

/** Kubernetes `metav1.StatusReason` values the proxy uses. */
export type K8sStatusReason =
  | "BadRequest"
  | "Unauthorized"
  | "Forbidden"
  | "NotFound"
  | "MethodNotAllowed"
  | "RequestEntityTooLarge"
  | "InternalError"
  | "ServiceUnavailable"
  | "Timeout";

/** An error the proxy answers with a Kubernetes Status (the message gets the GitLab prefix). */
export class K8sProxyError extends Error {
  override readonly name = "K8sProxyError";
  constructor(
    readonly code: number,
    message: string,
    readonly reason: K8sStatusReason = reasonForCode(code),
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function reasonForCode(code: number): K8sStatusReason {
  switch (code) {
    case 400:
      return "BadRequest";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "NotFound";
    case 405:
      return "MethodNotAllowed";
    case 413:
      return "RequestEntityTooLarge";
    case 503:
      return "ServiceUnavailable";
    case 504:
      return "Timeout";
    default:
      return "InternalError";
  }
}

/** The Status object (as JSON text) for `code` and `message`. */
export function statusJson(code: number, message: string, reason: K8sStatusReason = reasonForCode(code)): string {
  return JSON.stringify({
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message: message.startsWith(STATUS_MESSAGE_PREFIX) ? message : STATUS_MESSAGE_PREFIX + message,
    reason,
    code,
  });
}

/** Response headers of a Status answer (`Gitlab-Unauthorized: true` for 401). */
export function statusHeaders(code: number, body: string): Record<string, string> {
  const headers: Record<string, string> = {
    "content-type": "application/json",
    "content-length": String(Buffer.byteLength(body)),
    "cache-control": "no-store",
  };
  if (code === 401) headers[GITLAB_UNAUTHORIZED_HEADER.toLowerCase()] = "true";
  return headers;
}

/** HTTP status for a gRPC error coming back from the tunnel or the agent. */
export function httpCodeForConnectError(error: ConnectError): number {
  switch (error.code) {
    case Code.InvalidArgument:
    case Code.FailedPrecondition:
    case Code.OutOfRange:
      return 400;
    case Code.Unauthenticated:
      return 401;
    case Code.PermissionDenied:
      return 403;
    case Code.NotFound:
      return 404;
    case Code.ResourceExhausted:
      return 429;
    case Code.DeadlineExceeded:
      return 504;
    case Code.Unavailable:
      return 503;
    case Code.Canceled:
      return 499;
    default:
      return 502;
  }
}

/** Any error as a K8sProxyError (ConnectErrors keep their meaning, the rest is a 500). */
export function toK8sProxyError(error: unknown): K8sProxyError {
  if (error instanceof K8sProxyError) return error;
  if (error instanceof ConnectError) return new K8sProxyError(httpCodeForConnectError(error), error.rawMessage, undefined, { cause: error });
  return new K8sProxyError(500, `internal error: ${(error as Error)?.message ?? String(error)}`, "InternalError", { cause: error });
}
