/** Default largest gRPC message either side accepts or sends: 16 MiB, as GitLab's KAS and agentk. */
export const DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/** What a tunnel frame adds around a tunnelled message (ConnectRequest/ConnectResponse envelope). */
export const TUNNEL_ENVELOPE_BYTES = 1024;
