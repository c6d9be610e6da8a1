/** How a service refused an operation; the REST API maps kinds to 400/403/404/409. */
export type ServiceErrorKind = "invalid" | "forbidden" | "not_found" | "conflict";

/**
 * A refusal a caller can act on (bad input, missing record, duplicate). `fieldErrors` carries
 * per-attribute messages the way GitLab reports model validation errors
 * (`{"name": ["has already been taken"]}`).
 */
export class ServiceError extends Error {
  override readonly name = "ServiceError";
  constructor(
    readonly kind: ServiceErrorKind,
    message: string,
    readonly fieldErrors?: Record<string, string[]>,
  ) {
    super(message);
  }
}

export function invalid(message: string, fieldErrors?: Record<string, string[]>): ServiceError {
  return new ServiceError("invalid", message, fieldErrors);
}

/** `what` is capitalised as GitLab words it ("Project" → "Project Not Found"). */
export function notFound(what: string): ServiceError {
  return new ServiceError("not_found", `${what} Not Found`);
}

export function conflict(message: string): ServiceError {
  return new ServiceError("conflict", message);
}
