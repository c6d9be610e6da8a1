import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import {
  ConnectRequestSchema,
  ConnectResponseSchema,
  ReverseTunnel,
  type ConnectRequest,
  type ConnectResponse,
} from "../../gen/gitlab/agent/reverse_tunnel/rpc/rpc_pb.js";
import type { AgentTransport } from "../../transport/agent-transport.js";
import { AsyncQueue } from "../../util/async-queue.js";

/** `/gitlab.agent.reverse_tunnel.rpc.ReverseTunnel/Connect` */
const connectPath = `/${ReverseTunnel.typeName}/${ReverseTunnel.method.connect.name}`;

/**
 * The agent's end of one `ReverseTunnel/Connect` stream. `next()` yields what KAS sends and rejects
 * with a ConnectError when the stream fails; `send()` resolves when more may be sent.
 */
export interface TunnelStream extends AsyncIterator<ConnectResponse, undefined> {
  send(message: ConnectRequest): Promise<void>;
  /** Ends our side of the stream. Idempotent. */
  closeSend(): void;
  /** Whether `send()` would be refused (our side closed, or the stream ended). */
  readonly isSendClosed: boolean;
  /** Ends the stream now (RST_STREAM); `next()` rejects with `reason`. Idempotent. */
  cancel(reason: ConnectError): void;
}

/** Opens one tunnel stream; failures to connect surface through the stream's `next()`. */
export type TunnelStreamOpener = () => TunnelStream;

const tunnelCodec = {
  encode: (message: ConnectRequest) => toBinary(ConnectRequestSchema, message),
  decode: (bytes: Uint8Array) => fromBinary(ConnectResponseSchema, bytes),
};

/**
 * Tunnel streams as raw HTTP/2 gRPC calls on the agent transport's connection, with the transport's
 * headers (no connect-es client per tunnel). Undefined when the transport cannot open raw streams
 * (it has user interceptors); then use {@link connectTunnelStreams}.
 */
export function rawTunnelStreams(transport: AgentTransport): TunnelStreamOpener | undefined {
  const grpcStream = transport.grpcStream;
  if (!grpcStream) return undefined;
  return () => grpcStream(connectPath, tunnelCodec);
}

/** Tunnel streams through a connect-es client on any transport (interceptors run per stream). */
export function connectTunnelStreams(transport: Transport): TunnelStreamOpener {
  const client = createClient(ReverseTunnel, transport);
  return () => new ConnectTunnelStream(client);
}

class ConnectTunnelStream implements TunnelStream {
  private readonly out = new AsyncQueue<ConnectRequest>(8);
  private readonly abort = new AbortController();
  private readonly responses: AsyncIterator<ConnectResponse>;
  private failed = false;

  constructor(client: ReturnType<typeof createClient<typeof ReverseTunnel>>) {
    this.responses = client.connect(this.out, { signal: this.abort.signal })[Symbol.asyncIterator]();
  }

  get isSendClosed(): boolean {
    return this.out.isClosed;
  }

  send(message: ConnectRequest): Promise<void> {
    return this.out.push(message);
  }

  closeSend(): void {
    this.out.close();
  }

  cancel(reason: ConnectError): void {
    this.out.close();
    this.abort.abort(reason);
  }

  async next(): Promise<IteratorResult<ConnectResponse, undefined>> {
    try {
      const result = await this.responses.next();
      return result.done ? { done: true, value: undefined } : result;
    } catch (error) {
      if (!this.failed) {
        this.failed = true;
        this.out.close();
      }
      throw ConnectError.from(error, Code.Unknown);
    }
  }
}
