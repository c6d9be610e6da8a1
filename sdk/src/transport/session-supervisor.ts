import type { ServerHttp2Session, ServerHttp2Stream } from "node:http2";
import { safeTimeoutMs } from "../util/timers.js";

/** Server-side liveness and lifetime rules for one HTTP/2 session. */
export interface SessionSupervisorOptions {
  /** Send a PING this often; 0 disables. */
  keepalivePingIntervalMs: number;
  /** Destroy the session when a PING is not answered within this time. */
  keepalivePingTimeoutMs: number;
  /**
   * Close (GOAWAY) a session that has had no open stream for this long (PINGs do not count, as
   * with grpc-go's MaxConnectionIdle); 0 disables.
   */
  idleTimeoutMs: number;
  /** Close a session that has opened no stream this long after it started; 0: the idle rule only. */
  firstStreamTimeoutMs?: number;
  /** Send GOAWAY after this age (±10 % jitter); 0 disables. */
  maxAgeMs: number;
  /** After GOAWAY for age, allow in-flight streams this long before destroying. */
  maxAgeGraceMs: number;
}

const kSupervisor = Symbol("kasbridge.sessionSupervisor");
type Supervised = ServerHttp2Session & { [kSupervisor]?: SessionSupervisor };
type SupervisedStream = ServerHttp2Stream & { [kSupervisor]?: SessionSupervisor };

/**
 * Watches a server session: pings it so a vanished agent is noticed (its
 * connection then leaves the connected-agents view), closes sessions nobody
 * uses (no first stream in time, or no open stream for the idle period), and
 * ages connections out so agents re-balance across KAS replicas.
 * All timers are unref'd and cleared when the session closes.
 *
 * Thousands of sessions are normal, each open for hours: a session holds one
 * supervisor object and at most two timers, and its streams share the
 * supervisor's listeners (no closure per session or stream).
 */
export function superviseSession(session: ServerHttp2Session, options: SessionSupervisorOptions): void {
  const supervisor = new SessionSupervisor(session, options);
  (session as Supervised)[kSupervisor] = supervisor;
  session.on("close", onSessionClose);
  if (options.idleTimeoutMs > 0 || (options.firstStreamTimeoutMs ?? 0) > 0) session.on("stream", onSessionStream);
  supervisor.start();
}

function onSessionClose(this: Supervised): void {
  this[kSupervisor]?.stop();
}

function onSessionStream(this: Supervised, stream: ServerHttp2Stream): void {
  const supervisor = this[kSupervisor];
  if (!supervisor) return;
  supervisor.sawStream = true;
  supervisor.openStreams++;
  supervisor.lastActivity = Date.now();
  // A closed stream no longer knows its session, so it keeps the supervisor itself.
  (stream as SupervisedStream)[kSupervisor] = supervisor;
  stream.on("close", onStreamClose);
}

function onStreamClose(this: SupervisedStream): void {
  const supervisor = this[kSupervisor];
  if (!supervisor) return;
  this[kSupervisor] = undefined;
  supervisor.openStreams--;
  supervisor.lastActivity = Date.now();
}

class SessionSupervisor {
  openStreams = 0;
  sawStream = false;
  lastActivity = Date.now();
  /** The next keepalive PING, or the deadline of the one in flight. */
  private pingTimer: NodeJS.Timeout | undefined;
  /** The next idle check, or the age limit (and then its grace period). */
  private lifeTimer: NodeJS.Timeout | undefined;
  private ageDueAt = Number.POSITIVE_INFINITY;
  private aged = false;
  private stopped = false;

  constructor(
    private readonly session: Supervised,
    private readonly options: SessionSupervisorOptions,
  ) {}

  start(): void {
    const o = this.options;
    if (o.keepalivePingIntervalMs > 0) this.pingTimer = setTimeout(this.ping, safeTimeoutMs(o.keepalivePingIntervalMs)).unref();
    // Jitter spreads the reconnects of agents that connected together.
    if (o.maxAgeMs > 0) this.ageDueAt = Date.now() + o.maxAgeMs * (0.9 + Math.random() * 0.2);
    this.scheduleLife(Date.now());
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.pingTimer);
    clearTimeout(this.lifeTimer);
    this.pingTimer = this.lifeTimer = undefined;
    delete this.session[kSupervisor];
  }

  private readonly ping = (): void => {
    const session = this.session;
    if (this.stopped || session.closed || session.destroyed) return;
    const timeoutMs = this.options.keepalivePingTimeoutMs;
    let sent = false;
    try {
      sent = session.ping(this.onPong);
    } catch {
      // ping() throws once the session is destroyed.
    }
    if (sent) this.pingTimer = setTimeout(this.pingTimedOut, safeTimeoutMs(timeoutMs)).unref();
  };

  private readonly pingTimedOut = (): void => {
    this.session.destroy(new Error(`keepalive PING not answered within ${this.options.keepalivePingTimeoutMs} ms`));
  };

  private readonly onPong = (err: Error | null): void => {
    clearTimeout(this.pingTimer);
    this.pingTimer = undefined;
    // An error means the session is going away: nothing left to watch.
    if (!err && !this.stopped) this.pingTimer = setTimeout(this.ping, safeTimeoutMs(this.options.keepalivePingIntervalMs)).unref();
  };

  /** How long the session may go without an open stream: until its first one, the first-stream timeout if set. */
  private get idleMs(): number {
    const first = this.options.firstStreamTimeoutMs ?? 0;
    return !this.sawStream && first > 0 ? first : this.options.idleTimeoutMs;
  }

  /** One timer for the idle rule and the age rule: whichever is due first. */
  private scheduleLife(now: number): void {
    clearTimeout(this.lifeTimer);
    this.lifeTimer = undefined;
    if (this.stopped) return;
    const idleMs = this.idleMs;
    let dueAt = this.ageDueAt;
    if (idleMs > 0 && !this.aged) {
      // Busy sessions are looked at again a whole period later.
      const idleDueAt = this.openStreams > 0 ? now + idleMs : Math.max(now, this.lastActivity) + idleMs;
      dueAt = Math.min(dueAt, idleDueAt);
    }
    if (dueAt === Number.POSITIVE_INFINITY) return;
    // Clamped to setTimeout's range (~24.8 days; beyond it Node fires after 1 ms): a timer that
    // wakes before dueAt re-checks the rules and sleeps again.
    this.lifeTimer = setTimeout(this.onLifeTimer, safeTimeoutMs(dueAt - now)).unref();
  }

  private readonly onLifeTimer = (): void => {
    this.lifeTimer = undefined;
    const session = this.session;
    const now = Date.now();
    if (this.aged) {
      // Woken early (a grace period beyond setTimeout's range): sleep again.
      if (now < this.ageDueAt) return this.scheduleLife(now);
      session.destroy();
      return;
    }
    if (now >= this.ageDueAt) {
      this.aged = true;
      session.close();
      this.ageDueAt = now + this.options.maxAgeGraceMs;
    } else if (this.idleMs > 0 && this.openStreams === 0 && now - this.lastActivity >= this.idleMs) {
      session.close();
      return;
    }
    this.scheduleLife(now);
  };
}
