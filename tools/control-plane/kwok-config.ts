// kwok's configuration: our own minimal stages (a node becomes Ready, a pod on it goes Pending ->
// Running and Ready, a deleted pod is removed) and the debugging endpoints of every pod: logs and
// attach from one CRI-format file (or, for pods named in advance, a file of their own), exec as
// local commands in execDir, port-forward to the configured TCP targets or else to an echo command.

/** `kubectl port-forward` to `podPort` of any kwok pod reaches `address:port` (default 127.0.0.1). */
export interface PortForwardTarget {
  podPort: number;
  port: number;
  address?: string;
}

export function kwokConfig(podLogsFile: string, execDir: string, portForwards: PortForwardTarget[], ownLogFiles: ReadonlyMap<string, string> = new Map()): string {
  // kwok looks a pod's `Logs` up by its namespace and name before the cluster-wide ClusterLogs.
  const ownLogs = [...ownLogFiles]
    .map(([pod, file]) => {
      const [namespace, name] = pod.split("/");
      return `---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Logs
metadata:
  name: ${JSON.stringify(name)}
  namespace: ${JSON.stringify(namespace)}
spec:
  logs:
  - logsFile: ${JSON.stringify(file)}
`;
    })
    .join("");
  const targets = portForwards
    .map((f) => `  - ports: [${f.podPort}]\n    target: {port: ${f.port}, address: ${JSON.stringify(f.address ?? "127.0.0.1")}}\n`)
    .join("");
  return `apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-initialize
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'NotIn'
      values: ['True']
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - type: Ready
        status: "True"
        reason: KubeletReady
        message: "simulated by kwok"
        lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $now | Quote }}
      addresses:
      - type: InternalIP
        address: {{ NodeIP | Quote }}
      - type: Hostname
        address: {{ .metadata.name | Quote }}
      daemonEndpoints:
        kubeletEndpoint:
          Port: {{ NodePort }}
      allocatable: {cpu: "32", memory: 256Gi, pods: "250"}
      capacity: {cpu: "32", memory: 256Gi, pods: "250"}
      nodeInfo:
        architecture: amd64
        operatingSystem: linux
        bootID: ""
        machineID: ""
        systemUUID: ""
        osImage: kwok
        kernelVersion: {{ printf "kwok-%s" Version | Quote }}
        kubeletVersion: {{ printf "kwok-%s" Version | Quote }}
        kubeProxyVersion: {{ printf "kwok-%s" Version | Quote }}
        containerRuntimeVersion: {{ printf "kwok-%s" Version | Quote }}
      phase: Running
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Pending']
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - {type: PodScheduled, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: ContainersReady, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: Ready, status: "True", lastTransitionTime: {{ $now | Quote }}}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        imageID: {{ printf "kwok://%s" .image | Quote }}
        containerID: {{ printf "kwok://%s" .name | Quote }}
        ready: true
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
      initContainerStatuses:
      {{ range .spec.initContainers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: true
        restartCount: 0
        state:
          terminated:
            exitCode: 0
            reason: Completed
            startedAt: {{ $now | Quote }}
            finishedAt: {{ $now | Quote }}
      {{ end }}
      {{ with NodeIPsWith .spec.nodeName }}
      hostIP: {{ index . 0 | Quote }}
      hostIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      {{ with PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
      podIP: {{ index . 0 | Quote }}
      podIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      phase: Running
      startTime: {{ $now | Quote }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-delete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'Exists'
  next:
    finalizers:
      empty: true
    delete: true
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata:
  name: all-pods
spec:
  logs:
  - logsFile: ${JSON.stringify(podLogsFile)}
    follow: true
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterExec
metadata:
  name: all-pods
spec:
  execs:
  - local:
      workDir: ${JSON.stringify(execDir)}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterAttach
metadata:
  name: all-pods
spec:
  attaches:
  - logsFile: ${JSON.stringify(podLogsFile)}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterPortForward
metadata:
  name: all-pods
spec:
  forwards:
${targets}  - command: ["cat"]
${ownLogs}`;
}
