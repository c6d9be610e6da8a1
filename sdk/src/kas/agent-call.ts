import { setMaxListeners } from "node:events";
import type { HandlerContext } from "@connectrpc/connect";
import type { AgentInfo } from "../platform-client/platform-client.js";
import { bearerToken } from "../auth/bearer.js";
import type { KasModuleContext } from "./kas-module.js";

/** An authenticated agent call of a module's long-lived stream. */
export interface AgentCall {
  agent: AgentInfo;
  /** The agent's token, for platform calls made on its behalf (never logged). */
  token: string;
  /** Aborts when the agent cancels, its token is revoked or KAS shuts down. */
  signal: AbortSignal;
  /** Stops watching the token: call when the stream ends. */
  release(): void;
}

/** Authenticates a module call's agent and ties the call's end to revocation and shutdown. */
export async function openAgentCall(ctx: KasModuleContext, hctx: HandlerContext): Promise<AgentCall> {
  const agent = await ctx.auth.authenticate(hctx.requestHeader, hctx.signal);
  const watch = ctx.auth.watchToken(agent);
  const signal = AbortSignal.any([hctx.signal, watch.signal, ctx.shutdownSignal]);
  // Every stream of the call's lifetime listens to it (subscriptions, waits).
  setMaxListeners(0, signal);
  return { agent, token: bearerToken(hctx.requestHeader.get("authorization"))!, signal, release: () => watch.release() };
}
