// Roles of the function app identity on the resources in the app's resource
// group, each scoped to the one resource it is needed on.
//
// Storage: the identity is shared by the Functions host and the app code, so
// its rights are the union of what both need, each on a container:
//
// * the host (identity-based AzureWebJobsStorage__*): Microsoft documents
//   Storage Blob Data Owner as the host's requirement ("general coordination
//   and default key store": blob read/write plus creating its containers),
//   used in azure-webjobs-hosts (host id lock, timer schedule monitor and
//   singleton locks, which keep one rotation_sweep run at a time) and
//   azure-webjobs-secrets (function and host keys). storage.bicep creates
//   both containers, so Owner is granted on them only, not on the account.
//   No queue or table role: the app has no blob trigger, no Durable
//   Functions, and diagnostic events (table) are not needed.
// * the Flex Consumption deployment package container: the platform writes
//   the package there when `azd deploy` publishes (one deploy) and reads it
//   on every start, both with the app's identity (functionAppConfig
//   .deployment.storage.authentication SystemAssignedIdentity); Storage Blob
//   Data Owner, as for the host state.
// * the app's lease container (ROTATION_LEASE_CONTAINER): create, read and
//   lease blobs; Storage Blob Data Contributor suffices (no ACLs to manage).
// * nothing on the Event Grid dead-letter container (only the system
//   topics write there, deadletter-access.bicep).
//
// hostStorageAccountWide restores the former account-wide Blob Data Owner,
// only as an escape hatch if a future host version needs account-level
// operations (symptom: 403 AuthorizationPermissionMismatch in the host log).

@description('Principal id of the function app identity.')
param functionPrincipalId string

@description('The app storage account (host state, leases, deployment package).')
param storageAccountName string

@description('Containers of the Functions host state (azure-webjobs-hosts, azure-webjobs-secrets).')
param hostContainerNames array

@description('Blob container of the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Blob container of the rotation leases (ROTATION_LEASE_CONTAINER).')
param leaseContainerName string

@description('Escape hatch: Storage Blob Data Owner on the whole account instead of per container. Off by default.')
param hostStorageAccountWide bool = false

@description('The custom topic the app publishes SecretRotated events to.')
param eventTopicName string

@description('The Application Insights component the app sends telemetry to.')
param appInsightsName string

var storageBlobDataOwnerRoleId = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageBlobDataContributorRoleId = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var eventGridDataSenderRoleId = 'd5a91429-5739-47e2-a06b-3470a27159e7'
var monitoringMetricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deploymentContainerName
}

resource leaseContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: leaseContainerName
}

resource hostContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = [for name in hostContainerNames: {
  parent: blobService
  name: name
}]

resource eventTopic 'Microsoft.EventGrid/topics@2025-02-15' existing = {
  name: eventTopicName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource hostStateOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (name, i) in hostContainerNames: {
  name: guid(hostContainer[i].id, functionPrincipalId, storageBlobDataOwnerRoleId)
  scope: hostContainer[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwnerRoleId)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Secret rotation function app: Functions host state (locks, timers, keys) in this container.'
  }
}]

resource packageOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deploymentContainer.id, functionPrincipalId, storageBlobDataOwnerRoleId)
  scope: deploymentContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwnerRoleId)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Secret rotation function app: Flex Consumption deployment package.'
  }
}

resource leaseContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(leaseContainer.id, functionPrincipalId, storageBlobDataContributorRoleId)
  scope: leaseContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributorRoleId)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Secret rotation function app: one lease blob per secret.'
  }
}

resource accountWideOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hostStorageAccountWide) {
  name: guid(storage.id, functionPrincipalId, storageBlobDataOwnerRoleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwnerRoleId)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Secret rotation function app: account-wide blob access (hostStorageAccountWide escape hatch).'
  }
}

resource dataSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(eventTopic.id, functionPrincipalId, eventGridDataSenderRoleId)
  scope: eventTopic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventGridDataSenderRoleId)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Secret rotation function app: publish SecretRotated events.'
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, functionPrincipalId, monitoringMetricsPublisherRoleId)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisherRoleId)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Secret rotation function app: send telemetry with Entra authentication.'
  }
}
