/** gRPC's `grpc-timeout` ("100m", "5S", ...) in milliseconds; undefined when absent or malformed. */
export function parseGrpcTimeout(value: string | null): number | undefined {
  if (!value) return undefined;
  const match = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (!match) return undefined;
  const n = Number(match[1]);
  const unitMs: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 0.001, n: 0.000001 };
  return Math.max(1, Math.ceil(n * unitMs[match[2]]));
}
