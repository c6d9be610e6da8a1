import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { AgentModule } from "../../../agent/agent-module.js";
import { EchoService } from "../../../gen/kasbridge/echo/v1/echo_pb.js";

/** Largest payload ServerStream will generate per message (guards the agent's memory). */
const maxStreamMessageBytes = 4 * 1024 * 1024;

/**
 * kasbridge's diagnostics module: every agent serves `kasbridge.echo.v1.EchoService` through the
 * tunnel by default, answering as its pod name (or `agent-<pod id>`).
 */
export function echoAgentModule(): AgentModule {
  return {
    name: "echo",
    services: (ctx) => [{ service: EchoService, implementation: echoService(ctx.agentMeta.podName || `agent-${ctx.podId}`) }],
  };
}

/**
 * kasbridge's diagnostics service (`kasbridge.echo.v1.EchoService`), served by agents through the
 * tunnel so operators and tests can check the path end to end.
 */
export function echoService(servedBy: string): Partial<ServiceImpl<typeof EchoService>> {
  return {
    echo(req) {
      return { payload: req.payload, servedBy };
    },
    async *serverStream(req, ctx: HandlerContext) {
      if (req.size > maxStreamMessageBytes) {
        throw new ConnectError(`size ${req.size} exceeds ${maxStreamMessageBytes} bytes`, Code.InvalidArgument);
      }
      if (req.echoHeader) {
        const value = ctx.requestHeader.get(req.echoHeader);
        if (value !== null) ctx.responseHeader.set(`echo-${req.echoHeader}`, value);
        ctx.responseTrailer.set("echo-count", String(req.count));
      }
      const payload = new Uint8Array(req.size).fill(0x61);
      for (let index = 0; index < req.count; index++) {
        if (ctx.signal.aborted) return;
        yield { payload, index };
      }
    },
    async clientStream(requests) {
      let totalBytes = 0n;
      let messages = 0;
      for await (const req of requests) {
        totalBytes += BigInt(req.payload.byteLength);
        messages++;
      }
      return { totalBytes, messages };
    },
    async *bidi(requests) {
      for await (const req of requests) yield { payload: req.payload };
    },
    fail(req, ctx) {
      ctx.responseHeader.set("fail-header", "present");
      ctx.responseTrailer.set("fail-trailer", "present");
      const code = req.code in Code && req.code !== 0 ? (req.code as Code) : Code.Unknown;
      throw new ConnectError(req.message, code);
    },
  };
}
