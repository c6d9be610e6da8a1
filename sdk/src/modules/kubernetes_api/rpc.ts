import { KubernetesApi } from "../../gen/gitlab/agent/kubernetes_api/rpc/rpc_pb.js";

/** The tunnel method of the Kubernetes API proxy: `/gitlab.agent.kubernetes_api.rpc.KubernetesApi/MakeRequest`. */
export const MAKE_REQUEST_METHOD = `/${KubernetesApi.typeName}/${KubernetesApi.method.makeRequest.name}`;
