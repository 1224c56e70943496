/**
 * A JWT key ring that follows rotations: sign with the current key, verify with
 * the current key or any still-enabled previous version.
 *
 * - `format: "raw"`: a base64url HMAC key (HS256); verification tries each key.
 * - `format: "jwks"`: a JSON Web Key Set whose first key signs; verification
 *   picks the key by `kid` across the enabled versions' sets.
 *
 * EdDSA keys (the rotator's `alg: EdDSA`) are refused when the ring loads: the
 * `jsonwebtoken` library underneath has no EdDSA (the Python kit has).
 *
 * A token that verifies only with a key other than the current signing key is
 * accepted once the ring has confirmed, within the last `recheckMs`, that the
 * key is still enabled: retirement disables it, so a retired key stops verifying
 * within that time rather than the ring's TTL (one listing at most every
 * `recheckMs` while such tokens arrive; if Key Vault cannot be read then, the
 * keys held keep verifying).
 *
 * A token no known key verifies triggers one rate-limited reload (another
 * replica may already sign with a newer key). `publicJwks()` is built from
 * each key's public KeyObject, so no private member can be exported.
 */
import { createPrivateKey, createPublicKey, createSecretKey, type KeyObject, type JsonWebKey } from "node:crypto";
import jwt from "jsonwebtoken";
import { KitError, SecretUnavailable, TokenInvalid } from "./errors";
import type { CachedSecretClient } from "./secrets";

interface RingKey {
  kid?: string;
  alg: jwt.Algorithm;
  signing: KeyObject;
  verifying: KeyObject;
  version: string;
}

export interface JwtKeyRingOptions {
  format?: "raw" | "jwks";
  keyEncoding?: "base64url" | "utf8";
  maxVersions?: number;
  ttlMs?: number;
  reloadIntervalMs?: number;
  /** How old the confirmation that a previous key is still enabled may be (default 30 s). */
  recheckMs?: number;
}

export class JwtKeyRing {
  private keys: RingKey[] = [];
  private loadedAt = -Infinity;
  private failureReloadAt = -Infinity;
  private recheckedAt = -Infinity; // the last attempt to confirm a previous key (loaded or not)
  private loading: Promise<void> | undefined;
  private readonly format: "raw" | "jwks";

  constructor(
    private readonly secrets: CachedSecretClient,
    private readonly secretName = "jwt-signing-key",
    private readonly options: JwtKeyRingOptions = {},
  ) {
    this.format = options.format ?? "raw";
  }

  /** A token signed with the current key (`kid` set for JWKS keys). */
  async sign(claims: object, options: Omit<jwt.SignOptions, "algorithm" | "keyid"> = {}): Promise<string> {
    const [current] = await this.ring();
    return jwt.sign(claims, current.signing, {
      ...options,
      algorithm: current.alg,
      ...(current.kid ? { keyid: current.kid } : {}),
    });
  }

  /** The claims of a token signed by any still-enabled key; throws TokenInvalid. */
  async verify(token: string, options: Omit<jwt.VerifyOptions, "algorithms" | "complete"> = {}): Promise<jwt.JwtPayload> {
    const keys = await this.ring();
    let verified: { claims: jwt.JwtPayload; key: RingKey } | undefined;
    try {
      verified = this.verifyWith(keys, token, options);
    } catch (err) {
      if (!(err instanceof TokenInvalid)) throw err;
    }
    if (verified) {
      const confirmed = Math.max(this.loadedAt, this.recheckedAt);
      if (verified.key === keys[0] || performance.now() - confirmed < (this.options.recheckMs ?? 30_000)) {
        return verified.claims;
      }
      // A previous key, on a ring not confirmed lately: is it still enabled (not retired)?
      if (this.keys === keys) {
        if (!this.loading) this.recheckedAt = performance.now();
        try {
          await this.load();
        } catch (err) {
          if (err instanceof SecretUnavailable) return verified.claims; // Key Vault cannot tell now
          throw err;
        }
      }
      return this.verifyWith(this.keys, token, options).claims;
    }
    if (this.keys === keys) {
      // Nobody reloaded since our attempt: reload once (shared by concurrent failures), rate-limited.
      if (!this.loading) {
        if (performance.now() - this.failureReloadAt < (this.options.reloadIntervalMs ?? 5_000)) {
          throw new TokenInvalid("no known key verifies the token");
        }
        this.failureReloadAt = performance.now();
        this.secrets.invalidate(this.secretName);
      }
      await this.load();
    }
    return this.verifyWith(this.keys, token, options).claims;
  }

  /** `{keys: [...]}` of the public keys (JWKS format only). */
  async publicJwks(): Promise<{ keys: JsonWebKey[] }> {
    if (this.format !== "jwks") throw new Error("a raw HMAC key ring has no public keys to publish");
    const seen = new Set<string | undefined>();
    const keys: JsonWebKey[] = [];
    for (const key of await this.ring()) {
      if (seen.has(key.kid)) continue;
      seen.add(key.kid);
      keys.push({ ...key.verifying.export({ format: "jwk" }), kid: key.kid, alg: key.alg, use: "sig" });
    }
    return { keys };
  }

  /** Re-read the ring now (call from the refresh endpoint's `onRefreshed`). */
  async reload(): Promise<void> {
    await this.load();
  }

  private verifyWith(keys: RingKey[], token: string, options: jwt.VerifyOptions): { claims: jwt.JwtPayload; key: RingKey } {
    const decoded = jwt.decode(token, { complete: true });
    if (!decoded) throw new TokenInvalid("malformed token");
    const { alg, kid } = decoded.header;
    const candidates =
      this.format === "jwks" ? keys.filter((k) => k.kid !== undefined && k.kid === kid && k.alg === alg) : alg === "HS256" ? keys : [];
    for (const key of candidates) {
      try {
        const claims = jwt.verify(token, key.verifying, { ...options, algorithms: [key.alg] });
        if (typeof claims === "string") throw new TokenInvalid("token payload is not an object");
        return { claims, key };
      } catch (err) {
        if (err instanceof jwt.TokenExpiredError) throw new TokenInvalid("token expired");
        if (err instanceof jwt.JsonWebTokenError && err.message === "invalid signature") continue;
        throw new TokenInvalid(`token rejected (${(err as Error).name})`);
      }
    }
    throw new TokenInvalid("no known key verifies the token");
  }

  private async ring(): Promise<RingKey[]> {
    if (!this.keys.length || performance.now() - this.loadedAt >= (this.options.ttlMs ?? 300_000)) await this.load();
    return this.keys;
  }

  private load(): Promise<void> {
    this.loading ??= this.doLoad().finally(() => (this.loading = undefined));
    return this.loading;
  }

  private async doLoad(): Promise<void> {
    const versions = await this.secrets.enabledVersions(this.secretName, this.options.maxVersions ?? 3);
    const keys: RingKey[] = [];
    for (const secret of versions) {
      if (this.format === "raw") {
        const raw =
          (this.options.keyEncoding ?? "base64url") === "utf8"
            ? Buffer.from(secret.value, "utf8")
            : Buffer.from(secret.value, "base64url");
        const key = createSecretKey(raw);
        keys.push({ alg: "HS256", signing: key, verifying: key, version: secret.version });
        continue;
      }
      let set: { keys?: unknown };
      try {
        set = JSON.parse(secret.value) as { keys?: unknown };
      } catch {
        throw new TokenInvalid("the signing key secret is not a JSON Web Key Set");
      }
      for (const item of Array.isArray(set.keys) ? set.keys : []) {
        const jwk = item as JsonWebKey & { kid?: string; alg?: string };
        if (jwk.alg === "EdDSA" || jwk.kty === "OKP") {
          // jsonwebtoken signs and verifies RS/ES/PS/HS only: say so at load, not as every token refused.
          throw new KitError(
            `key ${jwk.kid ?? "(no kid)"} of ${this.secretName} is EdDSA, which this kit does not support; ` +
              "rotate the secret with alg RS256 or ES256 for services using the Node kit",
          );
        }
        const privateKey = createPrivateKey({ key: jwk, format: "jwk" });
        keys.push({
          kid: jwk.kid,
          alg: (jwk.alg ?? "RS256") as jwt.Algorithm,
          signing: privateKey,
          verifying: createPublicKey(privateKey),
          version: secret.version,
        });
      }
    }
    if (!keys.length) throw new TokenInvalid("the key ring is empty");
    this.keys = keys;
    this.loadedAt = performance.now();
  }
}
