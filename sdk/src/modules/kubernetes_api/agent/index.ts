// @kasbridge/sdk/modules/kubernetes_api/agent
export { kubernetesApiAgentModule } from "./kubernetes-api-agent-module.js";
export type { KubernetesApiAgentModuleOptions } from "./kubernetes-api-agent-module.js";
export { impersonationHeaders, isEmptyImpersonation } from "../impersonation.js";
export { MAKE_REQUEST_METHOD } from "../rpc.js";
export { ESCAPED_PATH_HEADER } from "../../../http/request-path.js";
