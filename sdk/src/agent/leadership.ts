/**
 * Leader election among the pods of one agent, for the modules GitLab runs on one pod only
 * (`IsProducingLeaderModules`: flux, gitops, remote_development, starboard_vulnerability). The
 * pods compete for the Lease `agent-<agent id>-lock` in their namespace (GitLab's name, so a mixed
 * deployment of GitLab's agentk and ours elects one leader); the winner runs the modules' leader
 * work until it stops leading or stops, then gives the Lease up so another pod takes over at once.
 *
 * A module registers its leader work with `ctx.leadership.run(name, work)` in its `start`: the work
 * starts each time this process becomes the leader and its signal aborts when leadership ends.
 * The agent id comes from the first configuration (GitLab's agentk learns it the same way), so the
 * campaign starts once one arrived.
 */
import { hostname } from "node:os";
import type { KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { sleep } from "../util/backoff.js";
import { apiErrorMessage } from "./kube-calls.js";
import { LeaseLock } from "./lease-lock.js";

export interface LeaderElectionOptions {
  /** The cluster credentials (a kubeconfig, or the in-cluster ServiceAccount's). */
  kubeConfig: KubeConfig;
  /** Namespace of the Lease. Default: the agent's `podNamespace` (POD_NAMESPACE), else "gitlab-agent". */
  namespace?: string;
  /** This process's `holderIdentity`. Default: the agent's `podName` (POD_NAME), else `<hostname>_<pod id>`. */
  identity?: string;
  /** How long the Lease holds without renewal. Default 15 000 ms (GitLab). */
  leaseDurationMs?: number;
  /** A leader that cannot renew for this long stops leading. Default 10 000 ms (GitLab). */
  renewDeadlineMs?: number;
  /** Time between two attempts to acquire or renew the Lease. Default 2 000 ms (GitLab). */
  retryPeriodMs?: number;
  /** Longest wait for giving the Lease up when the agent stops. Default 2 000 ms. */
  releaseTimeoutMs?: number;
}

/** Leader work: runs while this process leads; `signal` aborts when leadership ends or the agent stops. */
export type LeaderWork = (signal: AbortSignal) => Promise<void>;

/** What modules see of the election (`AgentModuleContext.leadership`). */
export interface Leadership {
  /** Whether this process leads now (always true without an election). */
  readonly isLeader: boolean;
  /**
   * Registers work that runs while this process is the leader: started on each win (at once when
   * there is no election), its signal aborted on loss and at shutdown. A rejection is logged.
   */
  run(name: string, work: LeaderWork): void;
  /** Calls `listener` on every change of `isLeader`; returns a function that removes it. */
  onChange(listener: (isLeader: boolean) => void): () => void;
}

/** The agent's side of a Leadership: what createAgent drives. */
export interface LeadershipController extends Leadership {
  /** The agent's id, from its configuration; the Lease is named after it. */
  setAgentId(agentId: bigint): void;
  start(): void;
  /** Ends the leader work (after the agent's shutdown signal aborted) and gives the Lease up. */
  close(): Promise<void>;
}

interface Registered {
  name: string;
  work: LeaderWork;
}

/** Shared bookkeeping: registered work, listeners, running the work for one term. */
abstract class LeadershipBase implements LeadershipController {
  protected readonly works: Registered[] = [];
  private readonly listeners = new Set<(isLeader: boolean) => void>();
  private leading = false;

  constructor(protected readonly logger: Logger) {}

  get isLeader(): boolean {
    return this.leading;
  }

  run(name: string, work: LeaderWork): void {
    this.works.push({ name, work });
    this.workAdded({ name, work });
  }

  onChange(listener: (isLeader: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  abstract setAgentId(agentId: bigint): void;
  abstract start(): void;
  abstract close(): Promise<void>;
  /** A module registered work (possibly while this process already leads). */
  protected abstract workAdded(work: Registered): void;

  protected setLeading(leading: boolean): void {
    if (this.leading === leading) return;
    this.leading = leading;
    for (const listener of this.listeners) {
      try {
        listener(leading);
      } catch (error) {
        this.logger.error({ err: error }, "leadership listener failed");
      }
    }
  }

  /** Starts one piece of work for the term that `signal` ends; resolves when it has ended. */
  protected startWork({ name, work }: Registered, signal: AbortSignal): Promise<void> {
    let running: Promise<void>;
    try {
      // Called now, not in a later tick, so that the work sees its signal before anyone can abort it.
      running = work(signal);
    } catch (error) {
      running = Promise.reject(error);
    }
    return running.catch((error: unknown) => {
      if (!signal.aborted) this.logger.error({ err: error, work: name }, "leader work failed");
    });
  }
}

/** No election: this process leads from start to stop (one agent process per token, or no cluster access). */
class SoleLeadership extends LeadershipBase {
  private readonly term = new AbortController();
  private readonly running: Promise<void>[] = [];
  private started = false;

  setAgentId(): void {}

  start(): void {
    this.started = true;
    this.setLeading(true);
    for (const work of this.works) this.running.push(this.startWork(work, this.term.signal));
  }

  protected workAdded(work: Registered): void {
    if (this.started && !this.term.signal.aborted) this.running.push(this.startWork(work, this.term.signal));
  }

  async close(): Promise<void> {
    this.term.abort();
    this.setLeading(false);
    await Promise.all(this.running);
  }
}

/** The Lease campaign (client-go's LeaderElector, GitLab's timings). */
class LeaseLeadership extends LeadershipBase {
  private readonly leaseDurationMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  private readonly releaseTimeoutMs: number;
  private readonly namespace: string;
  private readonly identity: string;
  private agentId: bigint | undefined;
  private started = false;
  private campaign: Promise<void> | undefined;
  private lock: LeaseLock | undefined;
  /** The current term's signal and the work running in it. */
  private term: { controller: AbortController; running: Promise<void>[] } | undefined;

  constructor(
    private readonly options: LeaderElectionOptions,
    agent: { podName: string; podNamespace: string; podId: bigint; shutdownSignal: AbortSignal },
    logger: Logger,
    private readonly shutdownSignal = agent.shutdownSignal,
  ) {
    super(logger);
    this.leaseDurationMs = options.leaseDurationMs ?? 15_000;
    this.renewDeadlineMs = options.renewDeadlineMs ?? 10_000;
    this.retryPeriodMs = options.retryPeriodMs ?? 2_000;
    this.releaseTimeoutMs = options.releaseTimeoutMs ?? 2_000;
    if (!(this.leaseDurationMs > this.renewDeadlineMs)) throw new Error("leaderElection.leaseDurationMs must be greater than renewDeadlineMs");
    if (!(this.renewDeadlineMs > this.retryPeriodMs)) throw new Error("leaderElection.renewDeadlineMs must be greater than retryPeriodMs");
    if (!(this.retryPeriodMs > 0)) throw new Error("leaderElection.retryPeriodMs must be positive");
    this.namespace = options.namespace || agent.podNamespace || "gitlab-agent";
    this.identity = options.identity || agent.podName || `${hostname()}_${agent.podId}`;
  }

  setAgentId(agentId: bigint): void {
    if (agentId <= 0n || this.agentId !== undefined) return;
    this.agentId = agentId;
    this.maybeCampaign();
  }

  start(): void {
    this.started = true;
    this.maybeCampaign();
  }

  protected workAdded(work: Registered): void {
    if (this.term && !this.term.controller.signal.aborted) this.term.running.push(this.startWork(work, this.term.controller.signal));
    this.maybeCampaign();
  }

  async close(): Promise<void> {
    await this.campaign;
  }

  /** Campaigns once the agent started, knows its id and has leader work to run. */
  private maybeCampaign(): void {
    if (this.campaign || !this.started || this.agentId === undefined || this.works.length === 0 || this.shutdownSignal.aborted) return;
    this.lock = new LeaseLock({
      kubeConfig: this.options.kubeConfig,
      namespace: this.namespace,
      name: `agent-${this.agentId}-lock`,
      identity: this.identity,
      leaseDurationMs: this.leaseDurationMs,
    });
    this.campaign = this.runCampaign(this.lock);
  }

  private async runCampaign(lock: LeaseLock): Promise<void> {
    const log = this.logger.child({ lease: `${this.namespace}/${lock.name}`, identity: this.identity });
    log.info("leader election: campaigning");
    let lastHolder = "";
    while (!this.shutdownSignal.aborted) {
      // Acquire.
      const attempt = await this.attempt(lock, this.retryPeriodMs, log);
      if (!attempt?.held) {
        if (attempt && attempt.other !== lastHolder) {
          lastHolder = attempt.other;
          log.info({ leader: attempt.other }, "leader election: another pod leads");
        }
        await sleep(jittered(this.retryPeriodMs), this.shutdownSignal);
        continue;
      }
      lastHolder = "";
      // Lead: start the work, renew until that fails for renewDeadlineMs or the agent stops.
      log.info("leader election: this pod leads");
      const term = { controller: new AbortController(), running: [] as Promise<void>[] };
      this.term = term;
      this.setLeading(true);
      for (const work of this.works) term.running.push(this.startWork(work, term.controller.signal));
      let renewedAt = Date.now();
      let lost = "";
      while (!this.shutdownSignal.aborted) {
        await sleep(this.retryPeriodMs, this.shutdownSignal);
        if (this.shutdownSignal.aborted) break;
        const left = this.renewDeadlineMs - (Date.now() - renewedAt);
        const renewal = left > 0 ? await this.attempt(lock, left, log) : undefined;
        if (renewal?.held) {
          renewedAt = Date.now();
        } else if (renewal && !renewal.held) {
          lost = `${renewal.other} holds the Lease`;
          break;
        } else if (Date.now() - renewedAt >= this.renewDeadlineMs) {
          lost = `not renewed for ${this.renewDeadlineMs} ms`;
          break;
        }
      }
      // Step down: the work ends before this process may lead again.
      term.controller.abort();
      this.setLeading(false);
      this.term = undefined;
      await Promise.all(term.running);
      if (this.shutdownSignal.aborted) break;
      log.warn({ reason: lost }, "leader election: this pod stopped leading");
    }
    try {
      await lock.release(this.releaseTimeoutMs);
    } catch (error) {
      log.warn({ err: apiErrorMessage(error) }, "leader election: could not give the Lease up; it expires by itself");
    }
  }

  /** One attempt; undefined when the API server could not be asked (logged at debug). */
  private async attempt(lock: LeaseLock, timeoutMs: number, log: Logger) {
    try {
      return await lock.tryAcquireOrRenew(this.shutdownSignal, timeoutMs);
    } catch (error) {
      if (!this.shutdownSignal.aborted) log.debug({ err: apiErrorMessage(error) }, "leader election: Lease request failed");
      return undefined;
    }
  }
}

/** client-go waits retryPeriod × [1, 1.2) between attempts to acquire, so candidates do not collide in step. */
function jittered(ms: number): number {
  return ms * (1 + Math.random() * 0.2);
}

/**
 * The election createAgent runs: a Lease campaign with `options`, or none (this process always
 * leads) without them.
 */
export function createLeadership(
  options: LeaderElectionOptions | undefined,
  agent: { podName: string; podNamespace: string; podId: bigint; shutdownSignal: AbortSignal },
  logger: Logger,
): LeadershipController {
  return options ? new LeaseLeadership(options, agent, logger) : new SoleLeadership(logger);
}
