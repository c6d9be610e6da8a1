import { expect } from "chai";
import { actualStateOf, type DeploymentInfo } from "./states.js";

function deployment(replicas: number, progressing: string, available: string, availableReplicas = 0, unavailableReplicas = 0): DeploymentInfo {
  return {
    metadata: { resourceVersion: "1" },
    spec: { replicas },
    status: {
      availableReplicas,
      unavailableReplicas,
      conditions: [
        { type: "Available", reason: available },
        { type: "Progressing", reason: progressing },
      ],
    },
  };
}

describe("remote development: actual state from what the agent reports", () => {
  const cases: Array<[string, Parameters<typeof actualStateOf>[0], string]> = [
    ["terminated", { name: "w", namespace: "n", termination_progress: "Terminated", error_details: { error_type: "applier" } }, "Terminated"],
    ["an apply error", { name: "w", namespace: "n", termination_progress: "Terminating", error_details: { error_type: "applier" } }, "Error"],
    ["terminating", { name: "w", namespace: "n", termination_progress: "Terminating" }, "Terminating"],
    ["no Deployment", { name: "w", namespace: "n" }, "Unknown"],
    ["a rollout past its deadline", { name: "w", namespace: "n", latest_k8s_deployment_info: deployment(1, "ProgressDeadlineExceeded", "MinimumReplicasUnavailable") }, "Failed"],
    ["a new ReplicaSet starting", { name: "w", namespace: "n", latest_k8s_deployment_info: deployment(1, "NewReplicaSetCreated", "MinimumReplicasUnavailable", 0, 1) }, "Starting"],
    ["scaling to 0", { name: "w", namespace: "n", latest_k8s_deployment_info: deployment(0, "ReplicaSetUpdated", "MinimumReplicasAvailable", 1) }, "Stopping"],
    ["complete at 0", { name: "w", namespace: "n", latest_k8s_deployment_info: deployment(0, "NewReplicaSetAvailable", "MinimumReplicasAvailable") }, "Stopped"],
    ["complete at 1", { name: "w", namespace: "n", latest_k8s_deployment_info: deployment(1, "NewReplicaSetAvailable", "MinimumReplicasAvailable", 1) }, "Running"],
    ["complete, pod not yet available", { name: "w", namespace: "n", latest_k8s_deployment_info: deployment(1, "NewReplicaSetAvailable", "MinimumReplicasUnavailable", 0, 1) }, "Starting"],
    ["complete, still one pod at 0", { name: "w", namespace: "n", latest_k8s_deployment_info: deployment(0, "NewReplicaSetAvailable", "MinimumReplicasUnavailable", 1) }, "Stopping"],
    ["unknown reasons", { name: "w", namespace: "n", latest_k8s_deployment_info: deployment(1, "Something", "Else") }, "Unknown"],
  ];
  for (const [what, info, state] of cases) {
    it(`${what} -> ${state}`, () => {
      expect(actualStateOf(info)).to.equal(state);
    });
  }
});
