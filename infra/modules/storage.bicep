// The function app's own storage account: host state (AzureWebJobsStorage),
// the Flex Consumption deployment package, the rotation lease container and
// the Event Grid dead-letter container. Shared keys are disabled: every
// client (host, app, Event Grid, the deployment engine) uses Entra ID.
//
// Every container anyone writes to is created here, so no identity needs the
// right to create containers, and every data role is scoped to a container
// (app-roles.bicep, deadletter-access.bicep), never to the account.

@description('Region of the account.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Storage account name (3-24 lower-case letters and digits).')
@minLength(3)
@maxLength(24)
param storageAccountName string

@description('Replication. ZRS/GZRS keep the host state and leases available across zones.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string = 'Standard_LRS'

@description('Blob container Flex Consumption deploys the app package to.')
param deploymentContainerName string

@description('Blob container holding the per-secret rotation leases (ROTATION_LEASE_CONTAINER).')
param leaseContainerName string

@description('Blob container Event Grid dead-letters undeliverable Key Vault events to.')
param deadLetterContainerName string

@description('Containers the Functions host keeps its own state in: azure-webjobs-hosts (host id lock, timer schedule monitor, singleton locks) and azure-webjobs-secrets (function and host keys; blob is the default key store).')
param hostContainerNames array = [
  'azure-webjobs-hosts'
  'azure-webjobs-secrets'
]

@description('Days deleted blobs and containers can be restored.')
@minValue(1)
@maxValue(365)
param deleteRetentionDays int = 7

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Without VNet integration the Flex Consumption host has no fixed egress address to admit, and a deny rule would also need private endpoints for the host and deployment engine. Shared keys and anonymous blob access are disabled, so every request needs an Entra identity with a data role.
  // checkov:skip=CKV_AZURE_59: Same reason as CKV_AZURE_35: public network access stays enabled, access is Entra-only (allowSharedKeyAccess false, allowBlobPublicAccess false).
  // checkov:skip=CKV_AZURE_206: Replication is the skuName parameter: LRS for dev, ZRS in main.prod.bicepparam. The account holds host state, expiring leases, the re-deployable package and dead letters; checkov only sees the default.
  // checkov:skip=CKV_AZURE_43: The name is a parameter; main.bicep builds it as 'strot' + uniqueString() (18 lower-case letters and digits), which checkov cannot evaluate. tests/infra/test_bicep.py checks the pattern.
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    supportsHttpsTrafficOnly: true
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: deleteRetentionDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: deleteRetentionDays
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource hostContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for name in hostContainerNames: {
  parent: blobService
  name: name
  properties: {
    publicAccess: 'None'
  }
}]

resource leaseContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: leaseContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output hostContainerNames array = hostContainerNames
