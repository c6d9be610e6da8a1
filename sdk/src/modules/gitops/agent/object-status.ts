/**
 * Whether an applied object is ready (a small version of kstatus, which GitLab's agent uses through
 * cli-utils): "Current" when its controller reports it done, "InProgress" while it works on it,
 * "Failed" when it gave up.
 */
export type ReadinessStatus = "Current" | "InProgress" | "Failed";

export interface Readiness {
  status: ReadinessStatus;
  message: string;
}

type Obj = {
  kind?: string;
  metadata?: { generation?: number; deletionTimestamp?: string };
  spec?: Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  status?: Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
};

type Condition = { type?: string; status?: string; reason?: string; message?: string };

const current = (message = ""): Readiness => ({ status: "Current", message });
const inProgress = (message: string): Readiness => ({ status: "InProgress", message });
const failed = (message: string): Readiness => ({ status: "Failed", message });

export function readiness(object: Obj): Readiness {
  if (object.metadata?.deletionTimestamp) return inProgress("being deleted");
  const status = object.status ?? {};
  const conditions: Condition[] = Array.isArray(status.conditions) ? status.conditions : [];
  const condition = (type: string) => conditions.find((c) => c.type === type);
  const generation = object.metadata?.generation;
  if (typeof status.observedGeneration === "number" && typeof generation === "number" && status.observedGeneration < generation) {
    return inProgress(`generation ${generation} not observed yet (at ${status.observedGeneration})`);
  }
  const replicas = typeof object.spec?.replicas === "number" ? object.spec.replicas : 1;
  const n = (v: unknown) => (typeof v === "number" ? v : 0);
  switch (object.kind) {
    case "Deployment": {
      const progressing = condition("Progressing");
      if (progressing?.reason === "ProgressDeadlineExceeded") return failed(progressing.message ?? "progress deadline exceeded");
      if (status.observedGeneration === undefined) return inProgress("not observed by its controller yet");
      if (n(status.updatedReplicas) < replicas) return inProgress(`${n(status.updatedReplicas)} of ${replicas} replicas updated`);
      if (n(status.replicas) > n(status.updatedReplicas)) return inProgress(`${n(status.replicas) - n(status.updatedReplicas)} old replicas pending termination`);
      if (n(status.availableReplicas) < replicas) return inProgress(`${n(status.availableReplicas)} of ${replicas} replicas available`);
      return current(`${replicas} replicas available`);
    }
    case "StatefulSet":
      if (status.observedGeneration === undefined) return inProgress("not observed by its controller yet");
      if (n(status.readyReplicas) < replicas) return inProgress(`${n(status.readyReplicas)} of ${replicas} replicas ready`);
      if (status.updateRevision && status.currentRevision !== status.updateRevision) return inProgress("rolling out a new revision");
      return current();
    case "ReplicaSet":
      if (n(status.availableReplicas) < replicas) return inProgress(`${n(status.availableReplicas)} of ${replicas} replicas available`);
      return current();
    case "DaemonSet":
      if (status.observedGeneration === undefined) return inProgress("not observed by its controller yet");
      if (n(status.numberAvailable) < n(status.desiredNumberScheduled) || n(status.updatedNumberScheduled) < n(status.desiredNumberScheduled)) {
        return inProgress(`${n(status.numberAvailable)} of ${n(status.desiredNumberScheduled)} pods available`);
      }
      return current();
    case "Pod":
      if (status.phase === "Succeeded") return current("succeeded");
      if (status.phase === "Failed") return failed(status.message ?? "pod failed");
      return condition("Ready")?.status === "True" ? current() : inProgress(`pod ${status.phase ?? "Pending"}`);
    case "Job":
      if (condition("Failed")?.status === "True") return failed(condition("Failed")?.message ?? "job failed");
      return condition("Complete")?.status === "True" ? current("complete") : inProgress("job running");
    case "PersistentVolumeClaim":
      return status.phase === "Bound" ? current() : inProgress(`claim ${status.phase ?? "Pending"}`);
    case "CustomResourceDefinition":
      return condition("Established")?.status === "True" ? current() : inProgress("not established yet");
    case "Namespace":
      return status.phase === "Terminating" ? inProgress("namespace terminating") : current();
  }
  // Any other kind: the usual conditions, else ready once applied.
  if (condition("Stalled")?.status === "True") return failed(condition("Stalled")?.message ?? "stalled");
  const ready = condition("Ready");
  if (ready && ready.status !== "True") return inProgress(ready.message || ready.reason || "not ready");
  if (condition("Reconciling")?.status === "True") return inProgress(condition("Reconciling")?.message ?? "reconciling");
  return current();
}
