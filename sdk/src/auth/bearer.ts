/** The token of an `Authorization: Bearer <token>` header value (scheme case-insensitive); undefined otherwise. */
export function bearerToken(authorization: string | null | undefined): string | undefined {
  if (!authorization) return undefined;
  return /^Bearer\s+(\S+)\s*$/i.exec(authorization)?.[1];
}
