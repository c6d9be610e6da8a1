import type { ServerHttp2Session } from "node:http2";

/** Server-side liveness and lifetime rules for one HTTP/2 session. */
export interface SessionSupervisorOptions {
  /** Send a PING this often; 0 disables. */
  keepalivePingIntervalMs: number;
  /** Destroy the session when a PING is not answered within this time. */
  keepalivePingTimeoutMs: number;
  /**
   * Close (GOAWAY) a session that has no open streams and has received
   * neither a new stream nor a PING for this long; 0 disables.
   */
  idleTimeoutMs: number;
  /** Send GOAWAY after this age (±10 % jitter); 0 disables. */
  maxAgeMs: number;
  /** After GOAWAY for age, allow in-flight streams this long before destroying. */
  maxAgeGraceMs: number;
}

/**
 * Watches a server session: pings it so a vanished agent is noticed (its
 * connection then leaves the connected-agents view), closes sessions nobody
 * uses, and ages connections out so agents re-balance across KAS replicas.
 * All timers are unref'd and cleared when the session closes.
 */
export function superviseSession(session: ServerHttp2Session, options: SessionSupervisorOptions): void {
  const timers = new Set<NodeJS.Timeout>();
  const later = (ms: number, fn: () => void): NodeJS.Timeout => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms).unref();
    timers.add(t);
    return t;
  };
  session.once("close", () => {
    for (const t of timers) clearTimeout(t);
    timers.clear();
  });

  if (options.keepalivePingIntervalMs > 0) {
    const ping = (): void => {
      if (session.closed || session.destroyed) return;
      const deadline = later(options.keepalivePingTimeoutMs, () => {
        session.destroy(new Error(`keepalive PING not answered within ${options.keepalivePingTimeoutMs} ms`));
      });
      let sent = false;
      try {
        sent = session.ping((err) => {
          clearTimeout(deadline);
          timers.delete(deadline);
          // An error means the session is going away: nothing left to watch.
          if (!err) later(options.keepalivePingIntervalMs, ping);
        });
      } catch {
        // ping() throws once the session is destroyed.
      }
      if (!sent) {
        clearTimeout(deadline);
        timers.delete(deadline);
      }
    };
    later(options.keepalivePingIntervalMs, ping);
  }

  if (options.idleTimeoutMs > 0) {
    let openStreams = 0;
    let lastActivity = Date.now();
    const touch = (): void => {
      lastActivity = Date.now();
    };
    session.on("stream", (stream) => {
      openStreams++;
      touch();
      stream.once("close", () => {
        openStreams--;
        touch();
      });
    });
    // Received PINGs (agentk sends one every 55 s) count as activity.
    session.on("ping", touch);
    const check = (): void => {
      const idleFor = Date.now() - lastActivity;
      if (openStreams === 0 && idleFor >= options.idleTimeoutMs) {
        session.close();
        return;
      }
      // Busy sessions are looked at again a whole period later.
      later(openStreams > 0 ? options.idleTimeoutMs : options.idleTimeoutMs - idleFor, check);
    };
    later(options.idleTimeoutMs, check);
  }

  if (options.maxAgeMs > 0) {
    // Jitter spreads the reconnects of agents that connected together.
    const age = options.maxAgeMs * (0.9 + Math.random() * 0.2);
    later(age, () => {
      session.close();
      later(options.maxAgeGraceMs, () => session.destroy());
    });
  }
}
