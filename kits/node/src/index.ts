/** Consumer kit for Key Vault secret rotation (the Node/Express side). See docs/consumers.md. */
export * from "./errors";
export * from "./secrets";
export * from "./bearer";
export * from "./refresh";
export * from "./healing";
export * from "./jwtRing";
export * from "./fanout";
