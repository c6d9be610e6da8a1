import { EventEmitter } from "node:events";
import type { ServerHttp2Session } from "node:http2";
import { describe, it, afterEach } from "mocha";
import { expect } from "chai";
import { maxTimerDelayMs } from "../util/timers.js";
import { superviseSession, type SessionSupervisorOptions } from "./session-supervisor.js";

/** A session that records what the supervisor does to it. */
class FakeSession extends EventEmitter {
  closed = false;
  destroyed = false;
  closes = 0;
  destroys = 0;
  ping(): boolean {
    return true;
  }
  close(): void {
    this.closes++;
  }
  destroy(): void {
    this.destroys++;
  }
}

const realSetTimeout = globalThis.setTimeout;
/** The timers armed while `capture` is on: delay and callback; the handles are real (never firing on their own). */
let armed: Array<{ delay: number; fire: () => void }> = [];
function capture(): void {
  armed = [];
  globalThis.setTimeout = ((fire: () => void, delay: number) => {
    armed.push({ fire, delay });
    return realSetTimeout(() => {}, maxTimerDelayMs).unref();
  }) as typeof setTimeout;
}

function supervise(options: Partial<SessionSupervisorOptions>): FakeSession {
  const session = new FakeSession();
  superviseSession(session as unknown as ServerHttp2Session, {
    keepalivePingIntervalMs: 0,
    keepalivePingTimeoutMs: 1000,
    idleTimeoutMs: 0,
    maxAgeMs: 0,
    maxAgeGraceMs: 1000,
    ...options,
  });
  return session;
}

const thirtyDaysMs = 30 * 24 * 3_600_000;

describe("transport/session-supervisor with limits beyond setTimeout's range (2^31-1 ms)", function () {
  let session: FakeSession | undefined;
  afterEach(() => {
    globalThis.setTimeout = realSetTimeout;
    session?.emit("close");
  });

  it("arms the age timer within range and, woken early, neither closes the session nor spins", () => {
    capture();
    session = supervise({ maxAgeMs: thirtyDaysMs });
    expect(armed.map((t) => t.delay)).to.deep.equal([maxTimerDelayMs]);
    armed[0].fire();
    expect(session.closes + session.destroys).to.equal(0);
    expect(armed.map((t) => t.delay)).to.have.length(2);
    expect(armed[1].delay).to.equal(maxTimerDelayMs);
  });

  it("does not destroy an aged session before a grace period beyond the range has passed", () => {
    capture();
    session = supervise({ maxAgeMs: 1, maxAgeGraceMs: thirtyDaysMs });
    const start = Date.now();
    while (Date.now() <= start + 2) {
      // The age (1 ms ± 10 %) passes.
    }
    armed[0].fire();
    expect(session.closes).to.equal(1);
    expect(armed[1].delay).to.equal(maxTimerDelayMs);
    armed[1].fire();
    expect(session.destroys).to.equal(0);
    expect(armed[2].delay).to.equal(maxTimerDelayMs);
  });

  it("clamps the keepalive interval too", () => {
    capture();
    session = supervise({ keepalivePingIntervalMs: thirtyDaysMs });
    expect(armed.map((t) => t.delay)).to.deep.equal([maxTimerDelayMs]);
  });
});
