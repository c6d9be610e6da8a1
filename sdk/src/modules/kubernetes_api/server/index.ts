// @kasbridge/sdk/modules/kubernetes_api/server
export { kubernetesApiServerModule } from "./kubernetes-api-module.js";
export type { KubernetesApiServerModule, KubernetesApiServerModuleOptions } from "./kubernetes-api-module.js";
export { createKubernetesApiProxy, K8S_PROXY_LIMITS } from "./kubernetes-api-proxy.js";
export type { KubernetesApiProxy, KubernetesApiProxyOptions } from "./kubernetes-api-proxy.js";
export { ProxyAuthenticator } from "./proxy-auth.js";
export type { ProxyAuthenticatorOptions, ProxyAuthorization, ProxyCaller } from "./proxy-auth.js";
export { ciJobIdentity, ciJobImpersonation, userImpersonation } from "../impersonation.js";
export { GITLAB_UNAUTHORIZED_HEADER, K8sProxyError, STATUS_MESSAGE_PREFIX, statusJson } from "./k8s-status.js";
export { MAKE_REQUEST_METHOD } from "../rpc.js";
export { ESCAPED_PATH_HEADER } from "../../../http/request-path.js";
