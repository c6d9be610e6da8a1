// @kasbridge/sdk/modules/notifications/server: Notifications/GitPushEvent on KAS's internal API,
// and the push event buses (in-process, Redis kas_events) the Flux and GitOps modules subscribe to.
export { notificationsServerModule } from "./notifications-server-module.js";
export type { NotificationsServerModuleOptions } from "./notifications-server-module.js";
export { InMemoryGitPushEvents } from "./git-push-events.js";
export type { GitPushEvents, GitPushEventInfo, GitPushListener } from "./git-push-events.js";
export { RedisGitPushEvents, KAS_EVENTS_CHANNEL } from "./redis-git-push-events.js";
export type { RedisGitPushEventsOptions, RedisPublisher, RedisSubscriber } from "./redis-git-push-events.js";
