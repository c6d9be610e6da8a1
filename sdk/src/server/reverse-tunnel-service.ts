import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { ConnectRequest, ConnectResponse, ReverseTunnel } from "../gen/gitlab/agent/reverse_tunnel/rpc/rpc_pb.js";
import { ServerTunnel } from "../tunnel/server/server-tunnel.js";
import type { TunnelRegistry } from "../tunnel/server/tunnel-registry.js";
import type { AgentAuthenticator } from "./agent-authenticator.js";

export interface ReverseTunnelServiceDeps {
  auth: AgentAuthenticator;
  registry: TunnelRegistry;
  logger: Logger;
  /** How long a new stream may take to send its descriptor. Default 10 000 ms. */
  descriptorTimeoutMs?: number;
  /** Ends all tunnels when KAS shuts down. */
  shutdownSignal: AbortSignal;
}

/** The KAS half of `gitlab.agent.reverse_tunnel.rpc.ReverseTunnel/Connect`. */
export function reverseTunnelService(deps: ReverseTunnelServiceDeps): Partial<ServiceImpl<typeof ReverseTunnel>> {
  const descriptorTimeoutMs = deps.descriptorTimeoutMs ?? 10_000;
  return {
    async *connect(requests: AsyncIterable<ConnectRequest>, ctx: HandlerContext): AsyncIterable<ConnectResponse> {
      const info = await deps.auth.authenticate(ctx.requestHeader, ctx.signal);
      const watch = deps.auth.watchToken(info);
      const signal = AbortSignal.any([ctx.signal, watch.signal, deps.shutdownSignal]);
      const input = requests[Symbol.asyncIterator]();
      try {
        const first = await withDeadline(input.next(), descriptorTimeoutMs, signal);
        if (first.done) return;
        if (first.value.msg.case !== "descriptor" || !first.value.msg.value.agentDescriptor) {
          throw new ConnectError(
            `tunnel protocol violation: expected descriptor, got ${first.value.msg.case ?? "an empty message"}`,
            Code.InvalidArgument,
          );
        }
        const tunnel = new ServerTunnel(info, first.value.msg.value.agentDescriptor, input, signal);
        const unregister = deps.registry.register(tunnel);
        tunnel.watchIdle();
        try {
          yield* tunnel.output();
        } finally {
          unregister();
          tunnel.close();
        }
      } finally {
        watch.release();
      }
    },
  };
}

function withDeadline<T>(promise: Promise<T>, ms: number, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const fail = (error: ConnectError) => {
      cleanup();
      reject(error);
    };
    const timer = setTimeout(() => fail(new ConnectError("no tunnel descriptor received in time", Code.DeadlineExceeded)), ms);
    const onAbort = () => fail(ConnectError.from(signal.reason ?? new ConnectError("stream closed", Code.Canceled)));
    signal.addEventListener("abort", onAbort, { once: true });
    function cleanup() {
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
    }
    promise.then(
      (v) => {
        cleanup();
        resolve(v);
      },
      (e: unknown) => {
        cleanup();
        reject(e);
      },
    );
  });
}
