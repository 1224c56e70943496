/** The kit's errors: one small tree, never carrying a secret value. */
export class KitError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}
/** The secret could not be read from Key Vault (outage, throttling, permissions). */
export class SecretUnavailable extends KitError {}
/** Key Vault has no such secret. */
export class SecretNotFound extends SecretUnavailable {}
/** A bearer token or JWT failed validation (401). */
export class TokenInvalid extends KitError {}
/** A valid token whose caller is not allowed here (403). */
export class CallerNotAllowed extends KitError {}
/** The token issuer's keys could not be fetched: temporary (503). */
export class IssuerUnavailable extends KitError {}
