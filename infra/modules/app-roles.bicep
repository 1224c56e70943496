// Roles of the function app identity on the resources in the app's resource
// group, each scoped to the one resource it is needed on.

@description('Principal id of the function app identity.')
param functionPrincipalId string

@description('The app storage account (host state, leases, deployment package).')
param storageAccountName string

@description('The custom topic the app publishes SecretRotated events to.')
param eventTopicName string

@description('The Application Insights component the app sends telemetry to.')
param appInsightsName string

var storageBlobDataOwnerRoleId = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var eventGridDataSenderRoleId = 'd5a91429-5739-47e2-a06b-3470a27159e7'
var monitoringMetricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource eventTopic 'Microsoft.EventGrid/topics@2025-02-15' existing = {
  name: eventTopicName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// The Functions host needs blob data access for its own state (timer
// schedule monitor, host locks, keys) and the deployment package; Owner is
// what the host documents for identity-based AzureWebJobsStorage.
resource blobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionPrincipalId, storageBlobDataOwnerRoleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwnerRoleId)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Secret rotation function app: host storage, leases, deployment package.'
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
