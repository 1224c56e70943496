// Roles of the function app identity for the Azure-managed credentials it
// rotates (docs/rotators.md): the key-slot rotator lists and regenerates the
// two keys of an Azure OpenAI / AI Foundry account or an Azure Redis cache, and
// nothing else. No built-in role is that narrow (Cognitive Services and Redis
// Cache Contributor may also create, reconfigure and delete), so each kind of
// resource gets a custom role with exactly those two actions, assignable in
// this resource group only and assigned on each target resource only.
//
// The Entra client-secret rotator needs no Azure role: its identity needs the
// Microsoft Graph application permission Application.ReadWrite.OwnedBy and to
// be an owner of the gateway's app registration, so it can add and remove
// passwords of that one application (docs/rotators.md, "Entra").

@description('Principal id of the function app identity.')
param functionPrincipalId string

@description('Azure OpenAI / AI Foundry (Cognitive Services) accounts in this resource group whose keys the app rotates.')
param cognitiveAccountNames array = []

@description('Azure Cache for Redis caches in this resource group whose access keys the app rotates.')
param redisCacheNames array = []

@description('Azure Managed Redis clusters in this resource group whose "default" database access keys the app rotates.')
param managedRedisClusterNames array = []

resource cognitiveKeySlots 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (!empty(cognitiveAccountNames)) {
  name: guid(resourceGroup().id, 'secret-rotation-cognitive-key-slots')
  properties: {
    roleName: 'Secret rotation: Cognitive Services key slots (${resourceGroup().name})'
    description: 'List and regenerate the two keys of a Cognitive Services account; nothing else.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.CognitiveServices/accounts/listKeys/action'
          'Microsoft.CognitiveServices/accounts/regenerateKey/action'
        ]
        notActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

resource redisKeySlots 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (!empty(redisCacheNames)) {
  name: guid(resourceGroup().id, 'secret-rotation-redis-key-slots')
  properties: {
    roleName: 'Secret rotation: Azure Cache for Redis access keys (${resourceGroup().name})'
    description: 'List and regenerate the two access keys of an Azure Cache for Redis; nothing else.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.Cache/redis/listKeys/action'
          'Microsoft.Cache/redis/regenerateKey/action'
        ]
        notActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

resource managedRedisKeySlots 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (!empty(managedRedisClusterNames)) {
  name: guid(resourceGroup().id, 'secret-rotation-managed-redis-key-slots')
  properties: {
    roleName: 'Secret rotation: Azure Managed Redis access keys (${resourceGroup().name})'
    description: 'List and regenerate the two access keys of an Azure Managed Redis database; nothing else.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.Cache/redisEnterprise/databases/listKeys/action'
          'Microsoft.Cache/redisEnterprise/databases/regenerateKey/action'
        ]
        notActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

resource accounts 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = [for name in cognitiveAccountNames: {
  name: name
}]

resource caches 'Microsoft.Cache/redis@2024-11-01' existing = [for name in redisCacheNames: {
  name: name
}]

resource managedDatabases 'Microsoft.Cache/redisEnterprise/databases@2025-04-01' existing = [for name in managedRedisClusterNames: {
  name: '${name}/default'
}]

resource cognitiveAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (name, i) in cognitiveAccountNames: {
  name: guid(accounts[i].id, functionPrincipalId, cognitiveKeySlots.id)
  scope: accounts[i]
  properties: {
    roleDefinitionId: cognitiveKeySlots.id
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Secret rotation function app: regenerate the idle key slot of this account.'
  }
}]

resource redisAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (name, i) in redisCacheNames: {
  name: guid(caches[i].id, functionPrincipalId, redisKeySlots.id)
  scope: caches[i]
  properties: {
    roleDefinitionId: redisKeySlots.id
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Secret rotation function app: regenerate the idle access key of this cache.'
  }
}]

resource managedRedisAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (name, i) in managedRedisClusterNames: {
  name: guid(managedDatabases[i].id, functionPrincipalId, managedRedisKeySlots.id)
  scope: managedDatabases[i]
  properties: {
    roleDefinitionId: managedRedisKeySlots.id
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Secret rotation function app: regenerate the idle access key of this database.'
  }
}]
