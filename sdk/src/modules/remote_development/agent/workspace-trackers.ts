/**
 * What one reconciler remembers between its cycles (GitLab's persistedStateTracker,
 * terminationTracker and errorTracker). A full sync starts from empty trackers, so whatever these
 * hold is bounded by the workspaces the platform named since the last full sync.
 */
import type { ErrorType, TerminationProgress } from "./reconcile-messages.js";

/** workspace name -> the Deployment version the platform said it has seen. */
export class PersistedVersions {
  private readonly versions = new Map<string, string>();

  isPersisted(name: string, resourceVersion: string | undefined): boolean {
    return this.versions.has(name) && this.versions.get(name) === (resourceVersion ?? "");
  }

  record(name: string, resourceVersion: string): void {
    this.versions.set(name, resourceVersion);
  }

  delete(name: string): void {
    this.versions.delete(name);
  }
}

const key = (name: string, namespace: string) => `${namespace}/${name}`;

/** Workspaces the agent is terminating: reported every cycle until the platform echoes Terminated. */
export class TerminationTracker {
  private readonly entries = new Map<string, { name: string; namespace: string; progress: TerminationProgress }>();

  set(name: string, namespace: string, progress: TerminationProgress): void {
    this.entries.set(key(name, namespace), { name, namespace, progress });
  }

  delete(name: string, namespace: string): void {
    this.entries.delete(key(name, namespace));
  }

  list(): Array<{ name: string; namespace: string; progress: TerminationProgress }> {
    return [...this.entries.values()];
  }
}

export interface TrackedError {
  name: string;
  namespace: string;
  type: ErrorType;
  message: string;
  /** Which attempt it came from: cleared only if no newer attempt replaced it. */
  version: number;
}

/**
 * The errors of the last attempt at each workspace, reported on the next cycle and forgotten once
 * the platform answered about that workspace (it has seen them).
 */
export class ErrorTracker {
  private readonly errors = new Map<string, TrackedError>();
  private counter = 0;

  /** A copy of what is tracked now: what this cycle reports. */
  snapshot(): TrackedError[] {
    return [...this.errors.values()];
  }

  record(name: string, namespace: string, type: ErrorType, message: string): void {
    this.errors.set(key(name, namespace), { name, namespace, type, message, version: ++this.counter });
  }

  /** Forgets the error of `name` if it is still the one `reported` (not a newer one). */
  clearIfReported(reported: TrackedError): void {
    const current = this.errors.get(key(reported.name, reported.namespace));
    if (current?.version === reported.version) this.errors.delete(key(reported.name, reported.namespace));
  }

  /** The last attempt succeeded. */
  clear(name: string, namespace: string): void {
    this.errors.delete(key(name, namespace));
  }
}
