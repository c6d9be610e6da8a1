import type { ConnectError } from "@connectrpc/connect";
import { encodeStatusDetails, statusFromError } from "../tunnel/rpc-status.js";

/** Percent-encodes a grpc-message value as the gRPC HTTP/2 spec requires. */
export function encodeGrpcMessage(message: string): string {
  const bytes = Buffer.from(message, "utf8");
  let out = "";
  for (const b of bytes) {
    out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** grpc-status / grpc-message / grpc-status-details-bin for a call that ends with `error` (or OK). */
export function grpcStatusHeaders(error: ConnectError | undefined): Record<string, string> {
  if (!error) return { "grpc-status": "0" };
  const headers: Record<string, string> = {
    "grpc-status": String(error.code),
    "grpc-message": encodeGrpcMessage(error.rawMessage),
  };
  if (error.details.length > 0) {
    headers["grpc-status-details-bin"] = Buffer.from(encodeStatusDetails(statusFromError(error))).toString("base64").replace(/=+$/, "");
  }
  return headers;
}
