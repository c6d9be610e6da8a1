import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { StatusSchema, type Status } from "../gen/google/rpc/status_pb.js";
import { AnySchema } from "@bufbuild/protobuf/wkt";

/** google.rpc.Status (as carried in the tunnel's Error frame) from any thrown value. */
export function statusFromError(error: unknown): Status {
  const ce = ConnectError.from(error);
  return create(StatusSchema, {
    code: ce.code,
    message: ce.rawMessage,
    details: ce.details.map((d) =>
      "desc" in d
        ? create(AnySchema, { typeUrl: `type.googleapis.com/${d.desc.typeName}`, value: toBinary(d.desc, create(d.desc, d.value)) })
        : create(AnySchema, { typeUrl: `type.googleapis.com/${d.type}`, value: d.value }),
    ),
  });
}

/** A ConnectError from a google.rpc.Status received through the tunnel. */
export function errorFromStatus(status: Status | undefined, metadata?: Headers): ConnectError {
  if (!status) return new ConnectError("agent sent an error without a status", Code.Internal, metadata);
  const code = status.code in Code && status.code !== 0 ? (status.code as Code) : Code.Unknown;
  const error = new ConnectError(status.message, code, metadata);
  for (const d of status.details) {
    error.details.push({ type: d.typeUrl.slice(d.typeUrl.lastIndexOf("/") + 1), value: d.value });
  }
  return error;
}

/** Serialized google.rpc.Status for a `grpc-status-details-bin` trailer. */
export function encodeStatusDetails(status: Status): Uint8Array {
  return toBinary(StatusSchema, status);
}

export function decodeStatusDetails(bytes: Uint8Array): Status {
  return fromBinary(StatusSchema, bytes);
}
