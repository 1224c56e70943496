/**
 * Entra ID bearer-token validation for the refresh endpoint (`auth: entra`).
 *
 * RS256 signature against the issuer's published keys, `exp`/`nbf`, `iss`
 * (one of `issuers`), `aud` (one of `audiences`) and the caller: `azp` (v2)
 * or `appid` (v1) in `allowedCallers` and/or a required app role. Keys come
 * from `metadataUrl` (default `<issuer>/.well-known/openid-configuration`) or
 * `jwksUrl`, so tests point it at a local issuer; unknown `kid`s re-fetch at
 * most once per `refetchIntervalMs`.
 */
import { createPublicKey, type KeyObject, type JsonWebKey } from "node:crypto";
import jwt from "jsonwebtoken";
import { CallerNotAllowed, IssuerUnavailable, TokenInvalid } from "./errors";

export interface EntraBearerOptions {
  issuers: string[];
  audiences: string[];
  allowedCallers?: string[];
  requiredRole?: string;
  metadataUrl?: string;
  jwksUrl?: string;
  refetchIntervalMs?: number;
  leewaySeconds?: number;
}

export class EntraBearerValidator {
  private keys = new Map<string, KeyObject>();
  private fetchedAt = -Infinity;
  private fetching: Promise<void> | undefined;

  constructor(private readonly options: EntraBearerOptions) {
    if (!options.issuers.length || !options.audiences.length) {
      throw new Error("at least one issuer and one audience are required");
    }
    if (!options.allowedCallers?.length && !options.requiredRole) {
      throw new Error("name the allowed callers (azp/appid) or a required app role");
    }
  }

  /** The token's claims; throws TokenInvalid (401), CallerNotAllowed (403) or IssuerUnavailable (503). */
  async validate(authorization: string | undefined): Promise<jwt.JwtPayload> {
    if (!authorization || authorization.slice(0, 7).toLowerCase() !== "bearer ") {
      throw new TokenInvalid("no bearer token");
    }
    const token = authorization.slice(7).trim();
    const decoded = jwt.decode(token, { complete: true });
    const kid = decoded?.header.kid;
    if (!decoded || typeof kid !== "string" || decoded.header.alg !== "RS256") {
      throw new TokenInvalid("token has no kid or an unexpected algorithm");
    }
    const key = await this.key(kid);
    let claims: jwt.JwtPayload;
    try {
      const verified = jwt.verify(token, key, {
        algorithms: ["RS256"],
        audience: this.options.audiences as [string, ...string[]],
        issuer: this.options.issuers as [string, ...string[]],
        clockTolerance: this.options.leewaySeconds ?? 60,
      });
      if (typeof verified === "string" || verified.exp === undefined) throw new Error("no exp");
      claims = verified;
    } catch (err) {
      throw new TokenInvalid(`token rejected (${(err as Error).name})`);
    }
    const caller = claims.azp ?? claims.appid;
    const roles: unknown = claims.roles;
    if (this.options.allowedCallers?.length && !this.options.allowedCallers.includes(caller)) {
      throw new CallerNotAllowed("caller is not allowed");
    }
    if (this.options.requiredRole && !(Array.isArray(roles) && roles.includes(this.options.requiredRole))) {
      throw new CallerNotAllowed("caller lacks the required role");
    }
    return claims;
  }

  private async key(kid: string): Promise<KeyObject> {
    let key = this.keys.get(kid);
    if (key) return key;
    if (performance.now() - this.fetchedAt >= (this.options.refetchIntervalMs ?? 60_000)) {
      this.fetching ??= this.fetch().finally(() => (this.fetching = undefined));
      await this.fetching;
      key = this.keys.get(kid);
    }
    if (!key) throw new TokenInvalid("token signed by an unknown key");
    return key;
  }

  private async fetch(): Promise<void> {
    this.fetchedAt = performance.now();
    try {
      let jwksUrl = this.options.jwksUrl;
      if (!jwksUrl) {
        const metadataUrl =
          this.options.metadataUrl ?? this.options.issuers[0].replace(/\/$/, "") + "/.well-known/openid-configuration";
        const metadata = (await getJson(metadataUrl)) as { jwks_uri?: unknown };
        if (typeof metadata?.jwks_uri !== "string") throw new Error("no jwks_uri");
        jwksUrl = metadata.jwks_uri;
      }
      const document = (await getJson(jwksUrl)) as { keys?: unknown[] };
      const keys = new Map<string, KeyObject>();
      for (const item of Array.isArray(document?.keys) ? document.keys : []) {
        const jwk = item as JsonWebKey & { kid?: unknown };
        if (typeof jwk.kid !== "string" || jwk.kty !== "RSA") continue;
        keys.set(jwk.kid, createPublicKey({ key: jwk, format: "jwk" }));
      }
      this.keys = keys;
    } catch (err) {
      throw new IssuerUnavailable(`could not fetch the issuer's keys (${(err as Error).name})`, { cause: err });
    }
  }
}

async function getJson(url: string): Promise<unknown> {
  const response = await fetch(url, { signal: AbortSignal.timeout(10_000), redirect: "error" });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.json();
}
