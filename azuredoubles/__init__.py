"""Local, faithful doubles of the few Azure endpoints the key-slot and Entra rotators call.

Like :mod:`kvemulator`, these are HTTPS servers (a throw-away ``trustme`` CA,
one thread per connection) that the *real* client libraries talk to:
``azure-mgmt-cognitiveservices``, ``azure-mgmt-redis`` and
``azure-mgmt-redisenterprise`` for ARM, azure-core's pipeline for Microsoft
Graph and the Entra token endpoint. Nothing of the clients is mocked.

Only what the rotators use is served, with the real paths and shapes:

- ARM ``listKeys``/``regenerateKey`` of a Cognitive Services account
  (Key1/Key2), an Azure Cache for Redis (Primary/Secondary) and an Azure
  Managed Redis database (the regenerate is a long-running operation that
  finishes at once);
- a Cognitive Services data plane (``GET /openai/models``) that accepts
  exactly the account's two keys in the ``api-key`` header;
- Graph ``GET /v1.0/applications/{id}``, ``addPassword``, ``removePassword``;
- Entra's ``/{tenant}/oauth2/v2.0/token`` (client credentials), which accepts
  exactly the application's live passwords;
- a real ``redis-server`` whose ``default`` user accepts exactly the cache's
  two access keys: every regenerate drives its ACL.
"""

from azuredoubles.doubles import AzureDoubles, CognitiveAccount, EntraApp, RedisCache

__all__ = ["AzureDoubles", "CognitiveAccount", "EntraApp", "RedisCache"]
