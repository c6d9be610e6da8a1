/**
 * One attempt at a time on a coordination.k8s.io/v1 Lease, as client-go's leader election does
 * it (GitLab's agentk uses client-go's LeaseLock): create the Lease when it is missing, take it
 * when its holder let it expire (or released it), renew it while holding it; every write names the
 * resourceVersion read, so two candidates can never both win the same round.
 *
 * Expiry is judged by this process's own clock from the moment it last saw the Lease's record
 * change, never by the timestamps written in it: candidates' clocks may disagree.
 */
import { CoordinationV1Api, type KubeConfig, type V1Lease } from "@kubernetes/client-node";
import { apiStatus, callOptions } from "./kube-calls.js";

export interface LeaseLockOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  name: string;
  /** This candidate's holderIdentity. */
  identity: string;
  /** How long a record holds without renewal. */
  leaseDurationMs: number;
}

/** What an attempt found. `other` names the holder that keeps the Lease. */
export type LeaseAttempt = { held: true } | { held: false; other: string };

export class LeaseLock {
  private readonly api: CoordinationV1Api;
  /** The record last seen (its JSON) and when, by this process's clock. */
  private observed: { record: string; atMs: number } | undefined;
  private holding = false;

  constructor(private readonly options: LeaseLockOptions) {
    this.api = options.kubeConfig.makeApiClient(CoordinationV1Api);
  }

  get name(): string {
    return this.options.name;
  }

  /** Whether the last attempt left this candidate holding the Lease. */
  get isHolder(): boolean {
    return this.holding;
  }

  /**
   * Creates, takes or renews the Lease. Resolves `{held: false}` when another candidate holds an
   * unexpired record or won the race for it; throws when the API server could not be asked.
   */
  async tryAcquireOrRenew(signal: AbortSignal | undefined, timeoutMs: number): Promise<LeaseAttempt> {
    const { namespace, name, identity } = this.options;
    const options = callOptions(signal, timeoutMs);
    const now = Date.now();
    let lease: V1Lease;
    try {
      lease = await this.api.readNamespacedLease({ name, namespace }, options);
    } catch (error) {
      if (apiStatus(error) !== 404) throw error;
      return this.create(now, options);
    }
    const spec = lease.spec ?? {};
    const record = JSON.stringify([spec.holderIdentity ?? "", spec.leaseDurationSeconds, spec.acquireTime, spec.renewTime, spec.leaseTransitions]);
    if (this.observed?.record !== record) this.observed = { record, atMs: now };
    const holder = spec.holderIdentity ?? "";
    const durationMs = (spec.leaseDurationSeconds ?? 0) * 1000;
    if (holder !== "" && holder !== identity && this.observed.atMs + durationMs > now) {
      this.holding = false;
      return { held: false, other: holder };
    }
    const mine = holder === identity;
    const stamp = microTime(now);
    const next: V1Lease = {
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: { name, namespace, resourceVersion: lease.metadata?.resourceVersion },
      spec: {
        holderIdentity: identity,
        leaseDurationSeconds: this.durationSeconds(),
        acquireTime: mine ? spec.acquireTime : (stamp as unknown as Date),
        renewTime: stamp as unknown as Date,
        leaseTransitions: mine ? (spec.leaseTransitions ?? 0) : (spec.leaseTransitions ?? 0) + 1,
      },
    };
    try {
      const written = await this.api.replaceNamespacedLease({ name, namespace, body: next }, options);
      this.remember(written, Date.now());
      return { held: true };
    } catch (error) {
      return this.lostRace(error);
    }
  }

  /**
   * Gives the Lease up if this candidate holds it, so that another takes over at once instead of
   * after the lease duration (client-go's ReleaseOnCancel): holder cleared, duration 1 s.
   */
  async release(timeoutMs: number): Promise<void> {
    if (!this.holding) return;
    this.holding = false;
    const { namespace, name, identity } = this.options;
    const options = callOptions(undefined, timeoutMs);
    const lease = await this.api.readNamespacedLease({ name, namespace }, options);
    if (lease.spec?.holderIdentity !== identity) return;
    const stamp = microTime(Date.now()) as unknown as Date;
    await this.api.replaceNamespacedLease(
      {
        name,
        namespace,
        body: {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          metadata: { name, namespace, resourceVersion: lease.metadata?.resourceVersion },
          spec: { ...lease.spec, holderIdentity: "", leaseDurationSeconds: 1, acquireTime: stamp, renewTime: stamp },
        },
      },
      options,
    );
  }

  private async create(now: number, options: ReturnType<typeof callOptions>): Promise<LeaseAttempt> {
    const { namespace, name, identity } = this.options;
    const stamp = microTime(now) as unknown as Date;
    try {
      const created = await this.api.createNamespacedLease(
        {
          namespace,
          body: {
            apiVersion: "coordination.k8s.io/v1",
            kind: "Lease",
            metadata: { name, namespace },
            spec: { holderIdentity: identity, leaseDurationSeconds: this.durationSeconds(), acquireTime: stamp, renewTime: stamp, leaseTransitions: 0 },
          },
        },
        options,
      );
      this.remember(created, Date.now());
      return { held: true };
    } catch (error) {
      return this.lostRace(error);
    }
  }

  /** A write refused with 409: someone created or wrote the Lease since we read it and won this round. */
  private lostRace(error: unknown): LeaseAttempt {
    if (apiStatus(error) !== 409) throw error;
    this.holding = false;
    return { held: false, other: "(a concurrent writer)" };
  }

  private remember(lease: V1Lease, atMs: number): void {
    const spec = lease.spec ?? {};
    this.observed = {
      record: JSON.stringify([spec.holderIdentity ?? "", spec.leaseDurationSeconds, spec.acquireTime, spec.renewTime, spec.leaseTransitions]),
      atMs,
    };
    this.holding = true;
  }

  private durationSeconds(): number {
    return Math.max(1, Math.ceil(this.options.leaseDurationMs / 1000));
  }
}

/**
 * A Lease's MicroTime: RFC 3339 with exactly six fractional digits, as the API server parses it
 * (client-node would send a Date's three).
 */
export function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}
