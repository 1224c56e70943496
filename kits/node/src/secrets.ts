/**
 * A version-aware, cached Key Vault secret client: a drop-in for the services'
 * `getSecret(name, useCache)` / `clearCache()`, plus the version, per-secret
 * invalidation, single-flight reads, a TTL, a no-cache list (default
 * `encryption-master-key`) and the previous still-enabled versions.
 *
 * A read that started before an invalidation never repopulates the cache (a
 * generation counter), so a refresh ping is never answered from a stale read.
 * Values never appear in `JSON.stringify`, `console.log` or errors.
 */
import { DefaultAzureCredential } from "@azure/identity";
import type { TokenCredential } from "@azure/identity";
import { SecretClient } from "@azure/keyvault-secrets";
import type { SecretClientOptions } from "@azure/keyvault-secrets";
import { SecretNotFound, SecretUnavailable } from "./errors";

export const DEFAULT_TTL_MS = 3_600_000;
export const DEFAULT_NO_CACHE = ["encryption-master-key"];

export interface SecretValue {
  readonly name: string;
  readonly version: string;
  /** Not enumerable: never printed by console.log or JSON.stringify. */
  readonly value: string;
  readonly createdOn?: Date;
  /** When this copy was read from Key Vault. */
  readonly readAt?: Date;
}

export function secretValue(name: string, version: string, value: string, createdOn?: Date, readAt?: Date): SecretValue {
  const out = { name, version, createdOn, readAt } as SecretValue;
  Object.defineProperty(out, "value", { value, enumerable: false });
  return Object.freeze(out);
}

/** The part of `SecretClient` the kit uses. */
export type SecretClientLike = Pick<SecretClient, "getSecret" | "listPropertiesOfSecretVersions">;

export interface CacheOptions {
  ttlMs?: number;
  noCache?: string[];
  now?: () => number;
}

interface Entry {
  secret: SecretValue;
  fetchedAt: number;
}

export class CachedSecretClient {
  private readonly ttlMs: number;
  private readonly noCache: Set<string>;
  private readonly now: () => number;
  private readonly cache = new Map<string, Entry>();
  private readonly generation = new Map<string, number>();
  private readonly inflight = new Map<string, { gen: number; promise: Promise<SecretValue> }>();
  // Values by version: a version's value never changes, so one read is enough (a JWT ring reloading after a
  // rotation finds the previous key here instead of reading it again). Holds per secret the current version,
  // the one current before it and what the last listing found enabled; what is retired is dropped at the
  // next listing or the next change of current version.
  private readonly versions = new Map<string, Map<string, SecretValue>>();
  private readonly current = new Map<string, string>();
  /** Key Vault reads made (observability and tests). */
  reads = 0;

  constructor(private readonly client: SecretClientLike, options: CacheOptions = {}) {
    this.ttlMs = options.ttlMs ?? DEFAULT_TTL_MS;
    this.noCache = new Set((options.noCache ?? DEFAULT_NO_CACHE).map((n) => n.toLowerCase()));
    this.now = options.now ?? (() => performance.now());
  }

  /** A client for `vaultUrl` with `DefaultAzureCredential` unless a credential is given. */
  static fromVaultUrl(
    vaultUrl: string,
    credential?: TokenCredential,
    options: CacheOptions & { client?: SecretClientOptions } = {},
  ): CachedSecretClient {
    const sdk = new SecretClient(vaultUrl, credential ?? new DefaultAzureCredential(), options.client);
    return new CachedSecretClient(sdk, options);
  }

  /** The current value (drop-in for the services' `getSecret(name, useCache)`). */
  async getSecret(name: string, useCache = true): Promise<string> {
    return (await this.get(name, useCache)).value;
  }

  /** The current version with its value, from the cache while it is fresh. */
  async get(name: string, useCache = true): Promise<SecretValue> {
    const key = name.toLowerCase();
    if (useCache && !this.noCache.has(key)) {
      const entry = this.cache.get(key);
      if (entry && this.now() - entry.fetchedAt < this.ttlMs) return entry.secret;
    }
    if (!useCache) this.bump(key);
    return this.readShared(name, key);
  }

  /** Invalidate `name` and read it again now (what a refresh ping does). */
  refresh(name: string): Promise<SecretValue> {
    return this.get(name, false);
  }

  /** A version other than `failedVersion` if Key Vault has one; one read per burst of failures. */
  async rereadAfterFailure(name: string, failedVersion: string): Promise<SecretValue> {
    const key = name.toLowerCase();
    const cached = this.cache.get(key);
    if (cached && cached.secret.version !== failedVersion) return cached.secret;
    const running = this.inflight.get(key);
    if (running && running.gen === (this.generation.get(key) ?? 0)) {
      const joined = await running.promise;
      if (joined.version !== failedVersion) return joined;
    }
    const again = this.cache.get(key);
    if (again && again.secret.version !== failedVersion) return again.secret;
    return this.get(name, false);
  }

  /** Drop one secret; reads already in flight will not repopulate it. */
  invalidate(name: string): void {
    this.bump(name.toLowerCase());
  }

  /** Drop every cached secret (drop-in for the services' `clearCache()`). */
  clearCache(): void {
    for (const key of new Set([...this.cache.keys(), ...this.inflight.keys()])) this.bump(key);
    this.cache.clear();
    this.versions.clear();
    this.current.clear();
  }

  cachedVersion(name: string): string | undefined {
    return this.cached(name)?.version;
  }

  /**
   * What the cache holds for `name`, fresh or past its TTL; never reads Key Vault. For callers that can act
   * on a possibly stale copy and confirm it with `get` before relying on it (the refresh endpoint verifies a
   * ping with the signing key it holds while it reads it again).
   */
  cached(name: string): SecretValue | undefined {
    return this.cache.get(name.toLowerCase())?.secret;
  }

  /** Whether the cache holds `name` within its TTL (a `get` now would not read Key Vault). */
  fresh(name: string): boolean {
    const entry = this.cache.get(name.toLowerCase());
    return entry !== undefined && this.now() - entry.fetchedAt < this.ttlMs;
  }

  /** Current version first, then older versions still enabled and valid, newest first (at most `limit`). */
  async enabledVersions(name: string, limit = 5): Promise<SecretValue[]> {
    const current = await this.get(name);
    const now = new Date();
    const older: { version: string; createdOn?: Date; index: number }[] = [];
    try {
      for await (const p of this.client.listPropertiesOfSecretVersions(name)) {
        if (!p.version || p.version === current.version || p.enabled === false) continue;
        if (p.expiresOn && p.expiresOn <= now) continue;
        if (p.notBefore && p.notBefore > now) continue;
        older.push({ version: p.version, createdOn: p.createdOn, index: older.length });
      }
    } catch (err) {
      throw translate(err, name, "list versions of");
    }
    // Newest first; versions created within the same second: the listing's order reversed.
    older.sort((a, b) => (b.createdOn?.getTime() ?? 0) - (a.createdOn?.getTime() ?? 0) || b.index - a.index);
    const out = [current];
    const key = name.toLowerCase();
    const wanted = older.slice(0, Math.max(0, limit - 1));
    const held = this.versions.get(key);
    const kept = new Set([current.version, ...wanted.map((item) => item.version)]);
    for (const version of held?.keys() ?? []) if (!kept.has(version)) held!.delete(version); // retired: dropped
    for (const item of wanted) {
      const known = held?.get(item.version);
      if (known) {
        out.push(known); // read before (when it was current): a version never changes
        continue;
      }
      try {
        const s = await this.client.getSecret(name, { version: item.version });
        const value = secretValue(name, item.version, s.value ?? "", item.createdOn, new Date());
        if (!this.noCache.has(key)) this.versionsOf(key).set(item.version, value);
        out.push(value);
      } catch {
        // disabled or deleted since it was listed: not usable anyway
      }
    }
    return out;
  }

  /** The newest still-enabled version older than the current one. */
  async previous(name: string): Promise<SecretValue | undefined> {
    return (await this.enabledVersions(name, 2))[1];
  }

  private versionsOf(key: string): Map<string, SecretValue> {
    let held = this.versions.get(key);
    if (!held) this.versions.set(key, (held = new Map()));
    return held;
  }

  /** Keep the value of a version read as current; of the others, only the one current before it. */
  private rememberCurrent(key: string, value: SecretValue): void {
    if (this.noCache.has(key) || !value.version) return;
    const held = this.versionsOf(key);
    const before = this.current.get(key);
    if (before !== value.version) {
      for (const version of held.keys()) if (version !== value.version && version !== before) held.delete(version);
      this.current.set(key, value.version);
    }
    held.set(value.version, value);
  }

  private bump(key: string): void {
    this.generation.set(key, (this.generation.get(key) ?? 0) + 1);
    this.cache.delete(key);
  }

  private readShared(name: string, key: string): Promise<SecretValue> {
    const gen = this.generation.get(key) ?? 0;
    const running = this.inflight.get(key);
    if (running && running.gen === gen) return running.promise;
    const promise = this.read(name, key, gen);
    this.inflight.set(key, { gen, promise });
    return promise;
  }

  private async read(name: string, key: string, gen: number): Promise<SecretValue> {
    try {
      this.reads += 1;
      let secret;
      try {
        secret = await this.client.getSecret(name);
      } catch (err) {
        throw translate(err, name, "read");
      }
      const value = secretValue(
        name, secret.properties.version ?? "", secret.value ?? "", secret.properties.createdOn, new Date(),
      );
      if ((this.generation.get(key) ?? 0) === gen && !this.noCache.has(key)) {
        this.cache.set(key, { secret: value, fetchedAt: this.now() });
      }
      this.rememberCurrent(key, value);
      return value;
    } finally {
      if (this.inflight.get(key)?.gen === gen) this.inflight.delete(key);
    }
  }
}

function translate(err: unknown, name: string, what: string): Error {
  const status = (err as { statusCode?: number }).statusCode;
  if (status === 404) return new SecretNotFound(`secret '${name}' not found`, { cause: err });
  const why = status ? `HTTP ${status}` : (err as Error)?.name ?? "error";
  return new SecretUnavailable(`could not ${what} secret '${name}' (${why})`, { cause: err });
}
