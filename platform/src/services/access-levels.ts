/** GitLab's member access levels (`Gitlab::Access`). */
export const AccessLevel = {
  NO_ACCESS: 0,
  GUEST: 10,
  REPORTER: 20,
  DEVELOPER: 30,
  MAINTAINER: 40,
  OWNER: 50,
  /** Instance administrators; only protected branch rules use it (GitLab's `Gitlab::Access::ADMIN`). */
  ADMIN: 60,
} as const;

export type AccessLevelValue = (typeof AccessLevel)[keyof typeof AccessLevel];

/** Levels a membership may carry (NO_ACCESS is only ever computed, never stored). */
export const MEMBER_ACCESS_LEVELS: readonly number[] = [
  AccessLevel.GUEST,
  AccessLevel.REPORTER,
  AccessLevel.DEVELOPER,
  AccessLevel.MAINTAINER,
  AccessLevel.OWNER,
];
