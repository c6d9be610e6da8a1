import type { AgentInfo } from "../platform-client/platform-client.js";
import { tokenRevokedError, type AgentAuthenticator } from "./agent-authenticator.js";

/** A stream that {@link AgentStreamGroups} can end (revocation, shutdown). */
export interface AgentStreamMember {
  group: TokenGroup | undefined;
  end(reason: unknown): void;
}

/** The open streams of one agent token: one revocation listener for all of them. */
export interface TokenGroup {
  readonly tokenId: number | undefined;
  readonly members: Set<AgentStreamMember>;
  stopWatching: () => void;
  revoked: boolean;
}

/**
 * The authenticated streams of one method, grouped by token: a revocation ends the token's streams
 * (one listener per token, not per stream) and KAS shutdown ends them all (one listener).
 */
export class AgentStreamGroups {
  private readonly groups = new Map<number | undefined, TokenGroup>();

  constructor(
    private readonly auth: AgentAuthenticator,
    private readonly shutdownSignal: AbortSignal,
    shutdownReason?: () => unknown,
  ) {
    if (!shutdownSignal.aborted) {
      shutdownSignal.addEventListener(
        "abort",
        () => {
          const reason = shutdownReason ? shutdownReason() : shutdownSignal.reason;
          for (const group of [...this.groups.values()]) for (const member of [...group.members]) member.end(reason);
        },
        { once: true },
      );
    }
  }

  /** Adds an authenticated stream; ends it at once when KAS is shutting down or the token is revoked. */
  join(member: AgentStreamMember, info: AgentInfo): void {
    if (this.shutdownSignal.aborted) return member.end(this.shutdownSignal.reason);
    const tokenId = info.tokenId;
    let group = this.groups.get(tokenId);
    if (!group) {
      const created: TokenGroup = { tokenId, members: new Set(), stopWatching: noop, revoked: false };
      const stop = this.auth.onRevoked(info, (reason) => {
        created.revoked = true;
        if (this.groups.get(tokenId) === created) this.groups.delete(tokenId);
        for (const revoked of [...created.members]) revoked.end(reason);
      });
      if (!stop) return member.end(tokenRevokedError());
      created.stopWatching = stop;
      this.groups.set(tokenId, created);
      group = created;
    }
    group.members.add(member);
    member.group = group;
  }

  /** Forgets a stream. Idempotent. */
  leave(member: AgentStreamMember): void {
    const group = member.group;
    if (!group) return;
    member.group = undefined;
    group.members.delete(member);
    if (group.members.size === 0 && !group.revoked && this.groups.get(group.tokenId) === group) {
      this.groups.delete(group.tokenId);
      group.stopWatching();
    }
  }
}

function noop(): void {}
